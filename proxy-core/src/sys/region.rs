//! Large zeroed buffers mapped straight from the kernel.
//!
//! A UDP receive batch is 2 MiB (32 slots of 64 KiB, room for any datagram), of which a
//! DNS-sized exchange touches a page per slot. From the kernel, untouched pages take no
//! memory, and dropping the buffer returns every page at once. From the C allocator, a
//! freed 2 MiB chunk raises glibc's mmap threshold, so later batches come from the heap:
//! zeroed in full (every page resident) and kept by the allocator once freed, which made
//! the resident size of a proxy that reloads climb.

#![allow(unsafe_code)]

use std::alloc::{Layout, handle_alloc_error};
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// `len` zeroed bytes in an anonymous private mapping of their own.
#[derive(Debug)]
pub(crate) struct Region {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a `Region` owns its mapping exclusively, like a `Box<[u8]>`; nothing else holds
// the pointer.
unsafe impl Send for Region {}
// SAFETY: shared access only reads through `&[u8]`.
unsafe impl Sync for Region {}

impl Region {
    /// Maps `len` (at least 1) zeroed bytes; like `vec![0; len]`, aborts when no memory
    /// can be had.
    pub(crate) fn zeroed(len: usize) -> Region {
        let len = len.max(1);
        // SAFETY: a new anonymous private mapping at an address of the kernel's choice
        // overlaps nothing of ours; its result is checked before use.
        let mapped = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::PRIVATE,
            )
        };
        match mapped.ok().and_then(|p| NonNull::new(p.cast::<u8>())) {
            Some(ptr) => Region { ptr, len },
            None => handle_alloc_error(Layout::array::<u8>(len).unwrap_or(Layout::new::<u8>())),
        }
    }
}

impl Deref for Region {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: the mapping is `len` readable bytes, zeroed by the kernel or written by
        // us, alive as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for Region {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `ptr` and `len` are exactly the mapping made in `zeroed`, and no slice
        // of it outlives `self`.
        if let Err(e) = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) } {
            tracing::warn!(error = %e, "munmap failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resident KiB of `region`, from /proc/self/pagemap (bit 63 of a page's entry: present).
    /// Not from smaps: the kernel may merge the mapping with a neighbour into one listing.
    fn resident_kib(region: &Region) -> usize {
        use std::io::{Read, Seek, SeekFrom};
        let page = rustix::param::page_size();
        let first = region.as_ptr() as usize / page;
        let pages = region.len().div_ceil(page);
        let mut map = std::fs::File::open("/proc/self/pagemap").unwrap();
        map.seek(SeekFrom::Start((first * 8) as u64)).unwrap();
        let mut entries = vec![0_u8; pages * 8];
        map.read_exact(&mut entries).unwrap();
        let present = entries
            .chunks_exact(8)
            .filter(|e| u64::from_ne_bytes((*e).try_into().unwrap()) >> 63 == 1)
            .count();
        present * page / 1024
    }

    #[test]
    fn untouched_pages_take_no_memory_and_read_as_zero() {
        let mut region = Region::zeroed(2 << 20);
        assert_eq!(region.len(), 2 << 20);
        assert_eq!(resident_kib(&region), 0);
        for slot in 0..32 {
            region[slot << 16] = 1;
        }
        // One page per slot written: 32 pages, not 512.
        assert!(
            resident_kib(&region) <= 32 * 4 * 2,
            "{} KiB",
            resident_kib(&region)
        );
        assert_eq!(region.iter().map(|&b| usize::from(b)).sum::<usize>(), 32);
    }
}
