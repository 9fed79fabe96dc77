//! Locks that survive a panic elsewhere: every std lock of the crate is
//! taken through these. A panic while holding one cannot leave the data
//! half-written (no lock here is held across a step that can panic midway
//! through an update), so a poisoned lock is taken as it is rather than
//! turning one panic into a panic on every later call.
//!
//! Depends on: nothing.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `mutex`, ignoring poisoning.
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Read-locks `lock`, ignoring poisoning.
pub fn read<T: ?Sized>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

/// Write-locks `lock`, ignoring poisoning.
pub fn write<T: ?Sized>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}
