//! Other systems: no splice; relays copy through user-space buffers.

use std::io;

/// Whether this platform can splice.
pub(crate) const SPLICE: bool = false;

/// Stands in for the Linux pipe; it can never be made.
#[derive(Debug)]
pub(crate) enum Pipe {}

impl Pipe {
    pub(crate) fn new(_size: usize) -> io::Result<Pipe> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }

    pub(crate) fn capacity(&self) -> usize {
        match *self {}
    }

    pub(crate) fn fill_from<T>(&self, _from: T, _len: usize) -> io::Result<usize> {
        match *self {}
    }

    pub(crate) fn drain_to<T>(&self, _to: T, _len: usize) -> io::Result<usize> {
        match *self {}
    }
}

/// Whether a splice error means "cannot splice"; never reached without splice.
pub(crate) fn splice_unsupported(_e: &io::Error) -> bool {
    true
}
