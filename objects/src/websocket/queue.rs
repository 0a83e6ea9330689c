//! A socket's send queue: what the object sent to one socket, waiting for
//! the socket's task to write it. Pure: the socket (`socket.rs`) holds it
//! under a lock and wakes its task; this module only counts.
//!
//! It is bounded in entries and in bytes. The bound covers the batch the
//! task is writing as well as what waits behind it, so a peer that does
//! not read pins at most one queue's worth. The task takes everything
//! queued at once (one lock per batch, not per frame) and gives the batch's
//! share of the bound back when the batch is written.
//!
//! It replaces a channel whose first block alone, allocated with the
//! socket, held 32 entries: an idle socket's queue now holds no entries'
//! room at all.

use std::collections::VecDeque;

/// How [`SendQueue::push`] went.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pushed<T> {
    /// Queued behind others (the task has been woken for them already).
    Queued,
    /// Queued into an empty queue: the task must be woken.
    Wake,
    /// Over the bound: the reader is too slow. The entry is handed back.
    Full(T),
    /// The socket's task has ended. The entry is handed back.
    Closed(T),
}

/// What the task finds when it takes the queue.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Taken {
    /// Entries moved into the batch.
    pub(crate) count: usize,
    /// Their bytes.
    pub(crate) bytes: usize,
    /// Every sender is gone: after this batch nothing more will come.
    pub(crate) ended: bool,
}

#[derive(Debug)]
pub(crate) struct SendQueue<T> {
    /// Entries with their bytes, oldest first.
    items: VecDeque<(T, usize)>,
    /// Entries queued or in the batch being written.
    count: usize,
    /// Their bytes.
    bytes: usize,
    max_count: usize,
    max_bytes: usize,
    /// Handles that can still push.
    senders: usize,
    /// The task has ended: pushes are refused.
    closed: bool,
}

impl<T> SendQueue<T> {
    /// An empty queue with one sender.
    pub(crate) fn new(max_count: usize, max_bytes: usize) -> Self {
        SendQueue {
            items: VecDeque::new(),
            count: 0,
            bytes: 0,
            max_count: max_count.max(1),
            max_bytes,
            senders: 1,
            closed: false,
        }
    }

    /// Queues `item` of `weight` bytes. An entry larger than the whole byte
    /// bound still goes into an empty queue, so one big message is never
    /// refused outright.
    pub(crate) fn push(&mut self, item: T, weight: usize) -> Pushed<T> {
        if self.closed {
            return Pushed::Closed(item);
        }
        let over_bytes = self.bytes > 0 && self.bytes.saturating_add(weight) > self.max_bytes;
        if self.count >= self.max_count || over_bytes {
            return Pushed::Full(item);
        }
        let was_empty = self.items.is_empty();
        self.items.push_back((item, weight));
        self.count += 1;
        self.bytes += weight;
        if was_empty {
            Pushed::Wake
        } else {
            Pushed::Queued
        }
    }

    /// Moves everything queued to the back of `batch`; the bound still
    /// counts it until [`written`](Self::written).
    pub(crate) fn take(&mut self, batch: &mut VecDeque<(T, usize)>) -> Taken {
        let count = self.items.len();
        let bytes = self.items.iter().map(|e| e.1).sum();
        if batch.is_empty() {
            // Swap buffers: no entry moves, and each side keeps its room.
            std::mem::swap(&mut self.items, batch);
        } else {
            batch.extend(self.items.drain(..));
        }
        Taken {
            count,
            bytes,
            ended: self.senders == 0,
        }
    }

    /// A taken batch of `count` entries and `bytes` bytes has been written
    /// (or dropped): its share of the bound is free again.
    pub(crate) fn written(&mut self, count: usize, bytes: usize) {
        self.count = self.count.saturating_sub(count);
        self.bytes = self.bytes.saturating_sub(bytes);
    }

    /// One more handle can push.
    pub(crate) fn add_sender(&mut self) {
        self.senders += 1;
    }

    /// A handle is gone; true if it was the last (the task must be woken to
    /// see the end).
    pub(crate) fn drop_sender(&mut self) -> bool {
        self.senders = self.senders.saturating_sub(1);
        self.senders == 0
    }

    /// The task has ended: drop what waits and refuse what comes.
    pub(crate) fn close(&mut self) {
        self.closed = true;
        self.items = VecDeque::new();
        self.count = 0;
        self.bytes = 0;
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.items.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wakes_on_the_first_entry_only_and_takes_all_at_once() {
        let mut q = SendQueue::new(10, 100);
        assert_eq!(q.push("a", 1), Pushed::Wake);
        assert_eq!(q.push("b", 2), Pushed::Queued);
        let mut batch = VecDeque::new();
        let t = q.take(&mut batch);
        assert_eq!(
            t,
            Taken {
                count: 2,
                bytes: 3,
                ended: false
            }
        );
        assert_eq!(batch, [("a", 1), ("b", 2)]);
        assert_eq!(q.push("c", 1), Pushed::Wake, "empty again: wake");
        q.written(2, 3);
    }

    #[test]
    fn the_bound_counts_the_batch_being_written() {
        let mut q = SendQueue::new(2, 100);
        q.push(1, 10);
        q.push(2, 10);
        let mut batch = VecDeque::new();
        q.take(&mut batch);
        assert_eq!(q.push(3, 1), Pushed::Full(3), "two in the batch");
        q.written(2, 20);
        assert_eq!(q.push(3, 1), Pushed::Wake);
    }

    #[test]
    fn bytes_bound_lets_one_big_entry_into_an_empty_queue() {
        let mut q = SendQueue::new(10, 100);
        assert_eq!(q.push("big", 1000), Pushed::Wake);
        assert_eq!(q.push("small", 1), Pushed::Full("small"));
        let mut batch = VecDeque::new();
        q.take(&mut batch);
        q.written(1, 1000);
        assert_eq!(q.push("small", 1), Pushed::Wake);
        assert_eq!(q.push("fits", 99), Pushed::Queued);
        assert_eq!(q.push("over", 1), Pushed::Full("over"));
    }

    #[test]
    fn the_last_sender_ends_it_and_a_closed_queue_refuses() {
        let mut q = SendQueue::new(10, 100);
        q.add_sender();
        q.push("a", 1);
        assert!(!q.drop_sender());
        assert!(q.drop_sender());
        let mut batch = VecDeque::new();
        assert_eq!(
            q.take(&mut batch),
            Taken {
                count: 1,
                bytes: 1,
                ended: true
            }
        );
        q.close();
        assert_eq!(q.push("b", 1), Pushed::Closed("b"));
        assert_eq!(q.len(), 0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(usize),
        Take,
        Write,
    }

    proptest! {
        /// Against a plain model: entries come out in the order they went
        /// in, each exactly once; entries plus the unwritten batch never pass
        /// the count bound, nor the byte bound unless the queue held nothing
        /// before the one entry that passes it; a wake is asked for exactly
        /// when the queue was empty.
        #[test]
        fn keeps_order_and_bounds(ops in proptest::collection::vec(prop_oneof![
            4 => (0usize..40).prop_map(Op::Push),
            2 => Just(Op::Take),
            2 => Just(Op::Write),
        ], 0..80)) {
            const MAX_COUNT: usize = 5;
            const MAX_BYTES: usize = 50;
            let mut q = SendQueue::new(MAX_COUNT, MAX_BYTES);
            let mut next = 0u32;
            let mut waiting: VecDeque<(u32, usize)> = VecDeque::new();
            let mut batch = VecDeque::new();
            let mut unwritten = (0usize, 0usize);
            let mut out = Vec::new();
            let mut expect_out = Vec::new();
            for op in ops {
                match op {
                    Op::Push(w) => {
                        let count = waiting.len() + unwritten.0;
                        let bytes: usize = waiting.iter().map(|e| e.1).sum::<usize>() + unwritten.1;
                        let fits = count < MAX_COUNT && (bytes == 0 || bytes + w <= MAX_BYTES);
                        let was_empty = waiting.is_empty();
                        match q.push(next, w) {
                            Pushed::Wake => prop_assert!(fits && was_empty),
                            Pushed::Queued => prop_assert!(fits && !was_empty),
                            Pushed::Full(n) => prop_assert!(!fits && n == next),
                            Pushed::Closed(_) => prop_assert!(false, "never closed here"),
                        }
                        if fits {
                            waiting.push_back((next, w));
                        }
                        next += 1;
                    }
                    Op::Take => {
                        let t = q.take(&mut batch);
                        prop_assert_eq!(t.count, waiting.len());
                        prop_assert_eq!(t.bytes, waiting.iter().map(|e| e.1).sum::<usize>());
                        unwritten.0 += t.count;
                        unwritten.1 += t.bytes;
                        expect_out.extend(waiting.drain(..).map(|e| e.0));
                    }
                    Op::Write => {
                        out.extend(batch.drain(..).map(|e: (u32, usize)| e.0));
                        q.written(unwritten.0, unwritten.1);
                        unwritten = (0, 0);
                    }
                }
            }
            out.extend(batch.drain(..).map(|e| e.0));
            prop_assert_eq!(out, expect_out);
        }
    }
}
