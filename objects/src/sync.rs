//! The crate's one policy for a poisoned lock: recover it.
//!
//! Every `Mutex` here guards plain data (socket tables, the alarm schedule,
//! the namespace registry, join handles) whose updates have no panic point
//! between their steps, so a lock poisoned by a panic elsewhere still holds
//! consistent data. Recovering keeps one panicking handler from taking the
//! runtime's shared tables down with it.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, recovering it if a panic poisoned it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Reads `l`, recovering it if a panic poisoned it (the cluster's view).
#[cfg(feature = "cluster")]
pub(crate) fn read<T>(l: &std::sync::RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Writes `l`, recovering it if a panic poisoned it.
#[cfg(feature = "cluster")]
pub(crate) fn write<T>(l: &std::sync::RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_still_opens_with_its_data() {
        let m = std::sync::Arc::new(Mutex::new(vec![1]));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = m2.lock();
            panic!("poison it");
        })
        .join();
        assert!(m.is_poisoned());
        lock(&m).push(2);
        assert_eq!(*lock(&m), vec![1, 2]);
    }
}
