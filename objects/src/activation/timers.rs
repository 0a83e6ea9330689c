//! Running an object's due named timers (`Context::timers`): they share
//! the object's one alarm, and the alarm event runs every timer due.

use super::*;

impl<O: Object> Activation<O> {
    /// An alarm delivery while timers are in use: runs every due timer
    /// (and the plain alarm, if due) in time order, each undone alone if
    /// it fails, with its retry count kept in its record; then sets the
    /// stored alarm to the earliest of what is left. The delivery itself
    /// always succeeds (retries are the records' business).
    pub(super) async fn fire_timers(
        &mut self,
        event: Event<O>,
        chain: &CallChain,
    ) -> EventResult<O> {
        let Event::Alarm { reply, .. } = event else {
            return Ok(Held::alarm(event));
        };
        let refuse = |reply: oneshot::Sender<AlarmOutcome>| -> Box<dyn FnOnce(Error) + Send> {
            Box::new(move |err: Error| drop(reply.send(alarm_failure(&err))))
        };
        let now = self.ns.shared.clock.now_ms();
        let due = match self.ctx.storage().due(now) {
            Ok(d) => d,
            Err(e) => return Err((refuse(reply), Box::new(e))),
        };
        for d in due {
            match self.ctx.storage().still_due(&d) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => return Err((refuse(reply), Box::new(e))),
            }
            let savepoint = self.ctx.storage().overlay_mut().savepoint();
            let outbox = self.ctx.outbox_len();
            let ran = self.run_due(&d, chain).await;
            let ran = match self.ctx.take_abort() {
                Some(reason) => Err(Box::new(Aborted { reason }) as BoxError),
                None => ran,
            };
            let settled = match ran {
                Ok(()) => {
                    self.ctx.storage().overlay_mut().release(savepoint);
                    self.ns.metrics.alarms_fired.increment(1);
                    self.ctx.storage().timer_succeeded(&d, now)
                }
                Err(e) => {
                    self.ctx.storage().overlay_mut().rollback(savepoint);
                    self.ctx.storage().end_event();
                    self.ctx.truncate_outbox(outbox);
                    self.count_reset_cause(&*e);
                    if !matches!(e.downcast_ref::<Error>(), Some(Error::NotImplemented(_))) {
                        self.drop_instance();
                    }
                    let retries = d.record().retries;
                    let retry_at = if self.retry.should_retry(retries) {
                        self.ns.metrics.alarms_retried.increment(1);
                        Some(now + self.retry.delay_ms(retries + 1, self.jitter.next_unit()))
                    } else {
                        self.ns.metrics.alarms_dropped.increment(1);
                        None
                    };
                    tracing::warn!(object = %crate::id::log_label(self.id.as_bytes()), namespace = %self.ns.name, error = %e, retries = retries + 1, dropped = retry_at.is_none(), "timer failed");
                    self.ctx.storage().timer_failed(&d, retry_at, now)
                }
            };
            if let Err(e) = settled {
                return Err((refuse(reply), Box::new(e)));
            }
        }
        match self.ctx.storage().sync_alarm() {
            Ok(()) => Ok(Held::Alarm(reply)),
            Err(e) => Err((refuse(reply), Box::new(e))),
        }
    }

    /// Runs one due timer's (or the plain alarm's) handler.
    async fn run_due(&mut self, due: &Due, chain: &CallChain) -> Result<(), BoxError> {
        if matches!(due, Due::Alarm(_)) {
            self.ctx.storage().take_user_alarm()?;
        }
        self.ensure_instance(chain).await?;
        let limit = self.ns.limits.event_time_limit;
        let instance = self.instance.as_mut().ok_or("instance missing")?;
        let ctx = &mut self.ctx;
        match due.timer() {
            Some(t) => limited(chain, limit, instance.timer(ctx, t)).await,
            None => {
                let info = crate::alarm::AlarmInfo {
                    retry_count: due.record().retries,
                    scheduled: crate::clock::from_ms(due.record().scheduled),
                };
                limited(chain, limit, instance.alarm(ctx, info)).await
            }
        }
    }
}
