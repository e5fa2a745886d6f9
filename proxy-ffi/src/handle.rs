//! Every conversion between C pointers and Rust values: the one place that trusts the C
//! caller's promises (documented in the header) about the pointers it passes.
//!
//! Modelled on rustls-ffi's `Castable`: each opaque C type names the Rust type behind it
//! and how C holds it, so a pointer can only be cast to the type it was made from.
//!
//! - [`OwnershipBox`]: made by [`to_boxed_mut_ptr`], owned by C until its `_free`
//!   ([`free_box`]); borrowed in between through [`try_ref`] / [`try_mut`].
//! - [`OwnershipRef`]: a borrow lent to C for the length of a callback ([`to_ref_mut_ptr`]).
//!
//! The helpers are safe functions: the `extern "C"` functions that call them are where C
//! hands over pointers, and C's side of the contract is that each pointer is NULL or valid
//! as the header describes. NULL is always checked here and becomes
//! `PROXY_STATUS_NULL_PARAMETER`.

use std::ffi::{CStr, c_char};
use std::marker::PhantomData;
use std::mem::MaybeUninit;

use crate::status::{Failure, proxy_status};

/// An opaque C type and the Rust value behind its pointers.
pub(crate) trait Castable {
    /// [`OwnershipBox`] or [`OwnershipRef`].
    type Ownership;
    /// The Rust value a pointer to `Self` points to.
    type RustType;
}

/// Made with `Box::into_raw`, freed with `Box::from_raw` by the type's `_free`.
pub(crate) struct OwnershipBox;

/// A `&mut` lent to C for the duration of one call.
pub(crate) struct OwnershipRef;

/// Moves `value` to the heap and hands C a pointer that owns it.
pub(crate) fn to_boxed_mut_ptr<C: Castable<Ownership = OwnershipBox>>(
    value: C::RustType,
) -> *mut C {
    Box::into_raw(Box::new(value)).cast::<C>()
}

/// Frees a value made by [`to_boxed_mut_ptr`]; NULL does nothing.
pub(crate) fn free_box<C: Castable<Ownership = OwnershipBox>>(ptr: *mut C) {
    if ptr.is_null() {
        return;
    }
    // SAFETY: a non-NULL `*mut C` comes from `to_boxed_mut_ptr::<C>` (the C contract:
    // pointers of this type are only made by this library's constructors), so it is a
    // `Box<C::RustType>` turned into a raw pointer, and C gives up ownership by calling
    // `_free`, exactly once.
    drop(unsafe { Box::from_raw(ptr.cast::<C::RustType>()) });
}

/// Borrows the value behind `ptr` for the call; `name` is the argument's name for the
/// error.
pub(crate) fn try_ref<'a, C: Castable>(
    ptr: *const C,
    name: &str,
) -> Result<&'a C::RustType, Failure> {
    // SAFETY: a non-NULL `*const C` points to a live `C::RustType` (made by
    // `to_boxed_mut_ptr` and not yet freed, or lent by `to_ref_mut_ptr` for the current
    // callback); the header's thread-safety notes keep mutable uses from running at the
    // same time.
    unsafe { ptr.cast::<C::RustType>().as_ref() }.ok_or_else(|| Failure::null(name))
}

/// Borrows the value behind `ptr` mutably for the call.
pub(crate) fn try_mut<'a, C: Castable>(
    ptr: *mut C,
    name: &str,
) -> Result<&'a mut C::RustType, Failure> {
    // SAFETY: as in `try_ref`; the header documents that a `proxy_config` or
    // `proxy_resolution` must not be used from two threads at once, so this borrow is
    // unique for the call.
    unsafe { ptr.cast::<C::RustType>().as_mut() }.ok_or_else(|| Failure::null(name))
}

/// Lends `value` to C as a `*mut C` for the length of one callback.
pub(crate) fn to_ref_mut_ptr<C: Castable<Ownership = OwnershipRef>>(
    value: &mut C::RustType,
) -> *mut C {
    std::ptr::from_mut(value).cast::<C>()
}

/// A C string argument as `&str`.
///
/// # Errors
///
/// `PROXY_STATUS_NULL_PARAMETER` for NULL, `PROXY_STATUS_INVALID_UTF8` for bytes that are
/// not UTF-8.
pub(crate) fn try_str<'a>(ptr: *const c_char, name: &str) -> Result<&'a str, Failure> {
    if ptr.is_null() {
        return Err(Failure::null(name));
    }
    // SAFETY: not NULL, and the C contract is that string arguments are NUL-terminated
    // and stay unchanged for the call.
    let s = unsafe { CStr::from_ptr(ptr) };
    s.to_str().map_err(|e| {
        Failure::new(
            proxy_status::InvalidUtf8,
            format!("`{name}` is not valid UTF-8: {e}"),
        )
    })
}

/// An out-parameter, checked for NULL before anything else happens, written only once
/// the call has succeeded.
pub(crate) struct Out<'a, T> {
    ptr: *mut T,
    _borrow: PhantomData<&'a mut T>,
}

impl<T> Out<'_, T> {
    /// Writes the result.
    pub(crate) fn write(self, value: T) {
        // SAFETY: `ptr` is not NULL (checked in `out`), and the C contract is that an
        // out-parameter points to writable, suitably aligned memory for a `T`, which may
        // be uninitialised: `write` neither reads nor drops the old contents.
        unsafe { self.ptr.write(value) }
    }
}

/// Checks an out-parameter.
///
/// # Errors
///
/// `PROXY_STATUS_NULL_PARAMETER` when `ptr` is NULL.
pub(crate) fn out<'a, T>(ptr: *mut T, name: &str) -> Result<Out<'a, T>, Failure> {
    if ptr.is_null() {
        return Err(Failure::null(name));
    }
    Ok(Out {
        ptr,
        _borrow: PhantomData,
    })
}

/// Copies `s` and a NUL into the caller's buffer `buf` of `len` bytes and its length
/// (without the NUL) to `*out_n`. `buf == NULL` with `len == 0` asks for the length only.
///
/// # Errors
///
/// `PROXY_STATUS_NULL_PARAMETER` when `out_n` is NULL or `buf` is NULL with `len > 0`;
/// `PROXY_STATUS_BUFFER_TOO_SMALL` when `len < s.len() + 1`. Nothing is written then.
pub(crate) fn copy_c_string(
    s: &str,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> Result<(), Failure> {
    let out_n = out(out_n, "out_n")?;
    if buf.is_null() {
        if len != 0 {
            return Err(Failure::null("buf"));
        }
        out_n.write(s.len());
        return Ok(());
    }
    if len < s.len() + 1 {
        return Err(Failure::new(
            proxy_status::BufferTooSmall,
            format!("the buffer has {len} bytes; {} are needed", s.len() + 1),
        ));
    }
    // SAFETY: `buf` is not NULL, and the C contract is that it points to `len` writable
    // bytes; viewing them as `MaybeUninit<u8>` makes no claim about their contents.
    let dst = unsafe { std::slice::from_raw_parts_mut(buf.cast::<MaybeUninit<u8>>(), len) };
    for (d, b) in dst.iter_mut().zip(s.bytes().chain([0])) {
        d.write(b);
    }
    out_n.write(s.len());
    Ok(())
}

/// Copies a `#[repr(C)]` value of plain `u64` fields into the caller's struct of
/// `out_size` bytes: whole fields only, as many as fit, so a caller built against an
/// older, shorter version of the struct gets the fields it knows.
///
/// # Errors
///
/// See [`u64_fields_out`].
pub(crate) fn copy_u64_fields<T: U64Fields>(
    value: &T,
    ptr: *mut T,
    out_size: usize,
) -> Result<(), Failure> {
    u64_fields_out(ptr, out_size)?.write(value);
    Ok(())
}

/// Checks the caller's struct of `out_size` bytes for [`copy_u64_fields`], to write it
/// later (once every other check of the call has passed).
///
/// # Errors
///
/// `PROXY_STATUS_NULL_PARAMETER` when `ptr` is NULL; `PROXY_STATUS_BUFFER_TOO_SMALL` when
/// not even one field fits.
pub(crate) fn u64_fields_out<'a, T: U64Fields>(
    ptr: *mut T,
    out_size: usize,
) -> Result<U64FieldsOut<'a, T>, Failure> {
    if ptr.is_null() {
        return Err(Failure::null("out"));
    }
    let fields = (out_size / 8).min(std::mem::size_of::<T>() / 8);
    if fields == 0 {
        return Err(Failure::new(
            proxy_status::BufferTooSmall,
            format!("`out_size` is {out_size}; pass sizeof the struct"),
        ));
    }
    Ok(U64FieldsOut {
        ptr,
        fields,
        _borrow: PhantomData,
    })
}

/// A checked caller's struct of `fields` `u64`s (see [`u64_fields_out`]).
pub(crate) struct U64FieldsOut<'a, T> {
    ptr: *mut T,
    fields: usize,
    _borrow: PhantomData<&'a mut T>,
}

impl<T: U64Fields> U64FieldsOut<'_, T> {
    /// Writes the first fields of `value`, as many as the caller's struct holds.
    pub(crate) fn write(self, value: &T) {
        let src = std::ptr::from_ref(value).cast::<u64>();
        // SAFETY: `T: U64Fields` is `#[repr(C)]` with only `u64` fields, so it is
        // consecutive `u64`s, and `self.fields` is at most their number. `ptr` is not NULL
        // (checked in `u64_fields_out`), and the C contract is that it points to
        // `out_size` writable bytes aligned for the struct, so the first `self.fields`
        // `u64`s fit; the two do not overlap, `value` being ours.
        unsafe { std::ptr::copy_nonoverlapping(src, self.ptr.cast::<u64>(), self.fields) };
    }
}

/// A `#[repr(C)]` struct whose fields are all `u64`.
///
/// # Safety
///
/// Only implement it for such structs: [`copy_u64_fields`] copies them as `u64` arrays.
pub(crate) unsafe trait U64Fields {}
