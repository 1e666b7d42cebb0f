//! Stopping a service's tasks on one executor, when a reload replaces or removes the service.

use std::cell::{Cell, RefCell};
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::rc::Rc;
use std::task::{Poll, Waker};

/// A signal shared by the tasks of one service on one executor. Once given, every wait
/// wrapped in [`Stop::or`] ends.
#[derive(Default)]
pub struct Stop {
    given: Cell<bool>,
    waiting: RefCell<Vec<Waker>>,
}

impl Stop {
    /// A signal not given yet.
    pub fn new() -> Rc<Stop> {
        Rc::new(Stop::default())
    }

    /// Gives the signal and wakes every task waiting on it.
    pub fn give(&self) {
        self.given.set(true);
        for waker in self.waiting.take() {
            waker.wake();
        }
    }

    /// True once the signal is given.
    pub fn is_given(&self) -> bool {
        self.given.get()
    }

    /// Runs `work` until it completes (`Some` with its output) or the signal is given
    /// (`None`; `work` is dropped, which cancels an operation it had in flight).
    pub async fn or<F: Future>(&self, work: F) -> Option<F::Output> {
        let mut work = pin!(work);
        poll_fn(|cx| {
            if self.given.get() {
                return Poll::Ready(None);
            }
            if let Poll::Ready(output) = work.as_mut().poll(cx) {
                return Poll::Ready(Some(output));
            }
            let mut waiting = self.waiting.borrow_mut();
            if !waiting.iter().any(|waker| waker.will_wake(cx.waker())) {
                waiting.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}
