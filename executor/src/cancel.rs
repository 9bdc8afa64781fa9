//! Cancellation requests, shared by every running action.

use tokio::sync::watch;

/// How urgently running actions must stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum CancelLevel {
    /// Keep running.
    #[default]
    None,
    /// Stop: `SIGTERM` to the group, a grace period, then `SIGKILL`.
    Graceful,
    /// Stop now: `SIGKILL` to the group.
    Immediate,
}

/// The sending side: raises the level for every [`Cancel`] made from it.
#[derive(Debug, Clone)]
pub struct CancelSource {
    tx: watch::Sender<CancelLevel>,
}

/// The receiving side an action watches.
#[derive(Debug, Clone)]
pub struct Cancel {
    rx: watch::Receiver<CancelLevel>,
}

impl Default for CancelSource {
    fn default() -> Self {
        CancelSource::new()
    }
}

impl CancelSource {
    /// A source at [`CancelLevel::None`].
    pub fn new() -> CancelSource {
        CancelSource {
            tx: watch::Sender::new(CancelLevel::None),
        }
    }

    /// A receiver for one action.
    pub fn token(&self) -> Cancel {
        Cancel {
            rx: self.tx.subscribe(),
        }
    }

    /// Raises the level to at least `level`; it never goes down.
    pub fn cancel(&self, level: CancelLevel) {
        self.tx.send_if_modified(|cur| {
            if level > *cur {
                *cur = level;
                true
            } else {
                false
            }
        });
    }

    /// The current level.
    pub fn level(&self) -> CancelLevel {
        *self.tx.borrow()
    }
}

impl Cancel {
    /// A token that is never cancelled.
    pub fn never() -> Cancel {
        // With the sender gone, `raised` waits forever.
        let (_, rx) = watch::channel(CancelLevel::None);
        Cancel { rx }
    }

    /// The current level.
    pub fn level(&self) -> CancelLevel {
        *self.rx.borrow()
    }

    /// Waits until the level rises above `than`, and returns it.
    pub async fn raised(&mut self, than: CancelLevel) -> CancelLevel {
        let level = self.rx.wait_for(|l| *l > than).await.map(|l| *l);
        match level {
            Ok(l) => l,
            // The source is gone: nobody can cancel any more.
            Err(_) => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn level_only_rises() {
        let src = CancelSource::new();
        let mut tok = src.token();
        src.cancel(CancelLevel::Immediate);
        src.cancel(CancelLevel::Graceful);
        assert_eq!(src.level(), CancelLevel::Immediate);
        assert_eq!(tok.raised(CancelLevel::None).await, CancelLevel::Immediate);
    }
}
