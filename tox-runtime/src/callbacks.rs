//! C callbacks. Each trampoline copies its arguments into the `Sink` passed as `user_data` to
//! `tox_iterate`, inside `catch_unwind` so a panic never unwinds into C. The owner thread turns the
//! collected raw events into typed [`crate::Event`]s after each iteration.

use std::ffi::{CStr, c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::instance::{Connection, FileControl};
use crate::sys;

/// What one callback reported, copied out of C memory.
#[derive(Debug)]
pub(crate) enum RawEvent {
    SelfConnection(Connection),
    FriendRequest {
        public_key: [u8; 32],
        message: Vec<u8>,
    },
    FriendConnection {
        friend: u32,
        status: Connection,
    },
    Lossless {
        friend: u32,
        data: Vec<u8>,
    },
    FileRecv {
        friend: u32,
        file: u32,
        kind: u32,
        size: u64,
        name: Vec<u8>,
        /// Read inside the callback: after `tox_iterate` returns the transfer may be gone.
        file_id: Option<[u8; 32]>,
    },
    FileRecvChunk {
        friend: u32,
        file: u32,
        position: u64,
        data: Vec<u8>,
    },
    FileChunkRequest {
        friend: u32,
        file: u32,
        position: u64,
        length: usize,
    },
    FileControl {
        friend: u32,
        file: u32,
        control: FileControl,
    },
}

/// Collects raw events during one `tox_iterate`.
#[derive(Debug, Default)]
pub(crate) struct Sink {
    pub(crate) events: Vec<RawEvent>,
    /// Set if a trampoline panicked; the owner logs it.
    pub(crate) panicked: bool,
}

/// Copies `len` bytes from C; an empty slice for a null pointer or zero length.
///
/// # Safety
/// `ptr` must be null or valid for reads of `len` bytes.
unsafe fn copy_bytes(ptr: *const u8, len: usize) -> Vec<u8> {
    if ptr.is_null() || len == 0 {
        return Vec::new();
    }
    // SAFETY: the caller guarantees `ptr` is valid for `len` bytes.
    unsafe { std::slice::from_raw_parts(ptr, len) }.to_vec()
}

/// Runs `f` with the sink behind `user_data`, catching any panic.
///
/// # Safety
/// `user_data` must be the `*mut Sink` passed to `tox_iterate` by `Instance::iterate`.
unsafe fn with_sink(user_data: *mut c_void, f: impl FnOnce() -> RawEvent) {
    if user_data.is_null() {
        return;
    }
    // SAFETY: per the contract, `user_data` is a live, exclusively borrowed Sink.
    let sink = unsafe { &mut *user_data.cast::<Sink>() };
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(event) => sink.events.push(event),
        Err(_) => sink.panicked = true,
    }
}

unsafe extern "C" fn self_connection(
    _tox: *mut sys::Tox,
    status: sys::Tox_Connection,
    user_data: *mut c_void,
) {
    // SAFETY: user_data is our Sink (registered with tox_iterate by Instance::iterate).
    unsafe {
        with_sink(user_data, || {
            RawEvent::SelfConnection(Connection::from_sys(status))
        })
    }
}

unsafe extern "C" fn friend_request(
    _tox: *mut sys::Tox,
    public_key: *const u8,
    message: *const u8,
    length: usize,
    user_data: *mut c_void,
) {
    // SAFETY: c-toxcore passes a 32-byte key and `length` message bytes, valid during the call.
    unsafe {
        with_sink(user_data, || {
            let mut pk = [0u8; 32];
            pk.copy_from_slice(&copy_bytes(public_key, 32));
            RawEvent::FriendRequest {
                public_key: pk,
                message: copy_bytes(message, length),
            }
        })
    }
}

unsafe extern "C" fn friend_connection(
    _tox: *mut sys::Tox,
    friend: u32,
    status: sys::Tox_Connection,
    user_data: *mut c_void,
) {
    // SAFETY: user_data is our Sink.
    unsafe {
        with_sink(user_data, || RawEvent::FriendConnection {
            friend,
            status: Connection::from_sys(status),
        })
    }
}

unsafe extern "C" fn lossless_packet(
    _tox: *mut sys::Tox,
    friend: u32,
    data: *const u8,
    length: usize,
    user_data: *mut c_void,
) {
    // SAFETY: `data` is valid for `length` bytes during the call; user_data is our Sink.
    unsafe {
        with_sink(user_data, || RawEvent::Lossless {
            friend,
            data: copy_bytes(data, length),
        })
    }
}

unsafe extern "C" fn file_recv(
    tox: *mut sys::Tox,
    friend: u32,
    file: u32,
    kind: u32,
    size: u64,
    name: *const u8,
    name_len: usize,
    user_data: *mut c_void,
) {
    // SAFETY: `name` is valid for `name_len` bytes during the call; user_data is our Sink;
    // `tox` is the instance being iterated on this thread, and tox_file_get_file_id may be called
    // from inside its callbacks (it only reads the transfer's state) into a 32-byte buffer.
    unsafe {
        with_sink(user_data, || {
            let mut id = [0u8; 32];
            let mut err = sys::Tox_Err_File_Get::TOX_ERR_FILE_GET_OK;
            let ok = sys::tox_file_get_file_id(tox, friend, file, id.as_mut_ptr(), &mut err);
            RawEvent::FileRecv {
                friend,
                file,
                kind,
                size,
                name: copy_bytes(name, name_len),
                file_id: ok.then_some(id),
            }
        })
    }
}

unsafe extern "C" fn file_recv_chunk(
    _tox: *mut sys::Tox,
    friend: u32,
    file: u32,
    position: u64,
    data: *const u8,
    length: usize,
    user_data: *mut c_void,
) {
    // SAFETY: `data` is valid for `length` bytes during the call; user_data is our Sink.
    unsafe {
        with_sink(user_data, || RawEvent::FileRecvChunk {
            friend,
            file,
            position,
            data: copy_bytes(data, length),
        })
    }
}

unsafe extern "C" fn file_chunk_request(
    _tox: *mut sys::Tox,
    friend: u32,
    file: u32,
    position: u64,
    length: usize,
    user_data: *mut c_void,
) {
    // SAFETY: user_data is our Sink.
    unsafe {
        with_sink(user_data, || RawEvent::FileChunkRequest {
            friend,
            file,
            position,
            length,
        })
    }
}

unsafe extern "C" fn file_control(
    _tox: *mut sys::Tox,
    friend: u32,
    file: u32,
    control: sys::Tox_File_Control,
    user_data: *mut c_void,
) {
    // SAFETY: user_data is our Sink.
    unsafe {
        with_sink(user_data, || RawEvent::FileControl {
            friend,
            file,
            control: FileControl::from_sys(control),
        })
    }
}

/// c-toxcore's log, forwarded to `tracing` under the target `toxcore`. It carries no secrets.
pub(crate) unsafe extern "C" fn log_trampoline(
    _tox: *mut sys::Tox,
    level: sys::Tox_Log_Level,
    file: *const c_char,
    line: u32,
    _func: *const c_char,
    message: *const c_char,
    _user_data: *mut c_void,
) {
    let _ = catch_unwind(|| {
        let text = |p: *const c_char| {
            if p.is_null() {
                String::new()
            } else {
                // SAFETY: c-toxcore passes NUL-terminated strings valid during the call.
                unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
            }
        };
        let (file, message) = (text(file), text(message));
        match level {
            sys::Tox_Log_Level::TOX_LOG_LEVEL_ERROR => {
                tracing::error!(target: "toxcore", %file, line, "{message}")
            }
            sys::Tox_Log_Level::TOX_LOG_LEVEL_WARNING => {
                tracing::warn!(target: "toxcore", %file, line, "{message}")
            }
            sys::Tox_Log_Level::TOX_LOG_LEVEL_INFO => {
                tracing::debug!(target: "toxcore", %file, line, "{message}")
            }
            _ => tracing::trace!(target: "toxcore", %file, line, "{message}"),
        }
    });
}

/// Installs every trampoline on a fresh instance.
///
/// # Safety
/// `tox` must be a valid instance, and every later `tox_iterate` on it must pass a `*mut Sink`.
pub(crate) unsafe fn register(tox: *mut sys::Tox) {
    // SAFETY: each function matches the callback type it is registered as.
    unsafe {
        sys::tox_callback_self_connection_status(tox, Some(self_connection));
        sys::tox_callback_friend_request(tox, Some(friend_request));
        sys::tox_callback_friend_connection_status(tox, Some(friend_connection));
        sys::tox_callback_friend_lossless_packet(tox, Some(lossless_packet));
        sys::tox_callback_file_recv(tox, Some(file_recv));
        sys::tox_callback_file_recv_chunk(tox, Some(file_recv_chunk));
        sys::tox_callback_file_chunk_request(tox, Some(file_chunk_request));
        sys::tox_callback_file_recv_control(tox, Some(file_control));
    }
}
