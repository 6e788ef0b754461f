//! `Instance` owns one `Tox*`: created from `Options`, freed in `Drop`, and used only by the thread that
//! owns it (`owner.rs`). Every method is a thin, checked wrapper over one c-toxcore call.

use std::ffi::CString;
use std::ptr::NonNull;

use toxmail_protocol::{PublicKey, TOX_ID_SIZE, ToxId};
use zeroize::Zeroizing;

use crate::callbacks::{self, Sink};
use crate::error::{Result, RuntimeError};
use crate::options::Options;
use crate::sys;

/// Connection state of ourselves or of a friend, as c-toxcore reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Connection {
    None,
    Tcp,
    Udp,
}

impl Connection {
    pub(crate) fn from_sys(c: sys::Tox_Connection) -> Self {
        match c {
            sys::Tox_Connection::TOX_CONNECTION_TCP => Connection::Tcp,
            sys::Tox_Connection::TOX_CONNECTION_UDP => Connection::Udp,
            _ => Connection::None,
        }
    }

    pub fn is_online(self) -> bool {
        self != Connection::None
    }
}

/// The version of the libtoxcore this process runs on, as (major, minor, patch).
pub(crate) fn linked_version() -> (u32, u32, u32) {
    // SAFETY: pure functions returning constants.
    unsafe {
        (
            sys::tox_version_major(),
            sys::tox_version_minor(),
            sys::tox_version_patch(),
        )
    }
}

/// Control messages of a file transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileControl {
    Resume,
    Pause,
    Cancel,
}

impl FileControl {
    pub(crate) fn from_sys(c: sys::Tox_File_Control) -> Self {
        match c {
            sys::Tox_File_Control::TOX_FILE_CONTROL_RESUME => FileControl::Resume,
            sys::Tox_File_Control::TOX_FILE_CONTROL_PAUSE => FileControl::Pause,
            _ => FileControl::Cancel,
        }
    }

    fn to_sys(self) -> sys::Tox_File_Control {
        match self {
            FileControl::Resume => sys::Tox_File_Control::TOX_FILE_CONTROL_RESUME,
            FileControl::Pause => sys::Tox_File_Control::TOX_FILE_CONTROL_PAUSE,
            FileControl::Cancel => sys::Tox_File_Control::TOX_FILE_CONTROL_CANCEL,
        }
    }
}

/// Why a chunk or packet could not be handed to c-toxcore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChunkError {
    /// The send queue is full: try again after the next iteration.
    QueueFull,
    /// Any other error (c-toxcore's code): the transfer or connection is gone.
    Gone(u32),
}

/// One c-toxcore instance. Not `Send`: it is created and dropped on its owner thread.
pub(crate) struct Instance {
    tox: NonNull<sys::Tox>,
}

/// Tox_Options allocated by c-toxcore, freed on drop.
struct RawOptions(NonNull<sys::Tox_Options>);

impl Drop for RawOptions {
    fn drop(&mut self) {
        // SAFETY: the pointer came from tox_options_new and is freed exactly once, here.
        unsafe { sys::tox_options_free(self.0.as_ptr()) }
    }
}

fn err_new_text(code: sys::Tox_Err_New) -> &'static str {
    match code {
        sys::Tox_Err_New::TOX_ERR_NEW_MALLOC => "out of memory",
        sys::Tox_Err_New::TOX_ERR_NEW_PORT_ALLOC => "no free UDP port in the configured range",
        sys::Tox_Err_New::TOX_ERR_NEW_LOAD_ENCRYPTED => "savedata is encrypted",
        sys::Tox_Err_New::TOX_ERR_NEW_LOAD_BAD_FORMAT => "savedata is corrupt or not Tox savedata",
        sys::Tox_Err_New::TOX_ERR_NEW_PROXY_BAD_TYPE
        | sys::Tox_Err_New::TOX_ERR_NEW_PROXY_BAD_HOST
        | sys::Tox_Err_New::TOX_ERR_NEW_PROXY_BAD_PORT
        | sys::Tox_Err_New::TOX_ERR_NEW_PROXY_NOT_FOUND => "bad proxy settings",
        _ => "unknown error",
    }
}

impl Instance {
    /// Creates an instance from `options`, restoring `savedata` (full Tox savedata) when given.
    pub(crate) fn new(options: &Options, savedata: Option<&[u8]>) -> Result<Instance> {
        let mut err = sys::Tox_Err_Options_New::TOX_ERR_OPTIONS_NEW_OK;
        // SAFETY: tox_options_new writes only to `err`; a null return is handled.
        let raw = unsafe { sys::tox_options_new(&mut err) };
        let raw = RawOptions(NonNull::new(raw).ok_or(RuntimeError::New("out of memory"))?);
        let o = raw.0.as_ptr();
        // SAFETY: `o` is a valid Tox_Options for the life of `raw`; the setters only store values.
        // The savedata pointer is read by tox_new below while `savedata` is still borrowed.
        unsafe {
            sys::tox_options_set_ipv6_enabled(o, options.ipv6);
            sys::tox_options_set_udp_enabled(o, options.udp);
            sys::tox_options_set_local_discovery_enabled(o, options.local_discovery);
            sys::tox_options_set_hole_punching_enabled(o, options.hole_punching);
            sys::tox_options_set_dht_announcements_enabled(o, options.dht_announcements);
            sys::tox_options_set_start_port(o, options.start_port);
            sys::tox_options_set_end_port(o, options.end_port);
            sys::tox_options_set_tcp_port(o, options.tcp_port);
            sys::tox_options_set_log_callback(o, Some(callbacks::log_trampoline));
            if let Some(data) = savedata {
                sys::tox_options_set_savedata_type(
                    o,
                    sys::Tox_Savedata_Type::TOX_SAVEDATA_TYPE_TOX_SAVE,
                );
                sys::tox_options_set_savedata_data(o, data.as_ptr(), data.len());
            }
        }
        let mut err = sys::Tox_Err_New::TOX_ERR_NEW_OK;
        // SAFETY: `o` is valid; c-toxcore copies what it needs from the options and savedata.
        let tox = unsafe { sys::tox_new(o, &mut err) };
        let tox = NonNull::new(tox).ok_or(RuntimeError::New(err_new_text(err)))?;
        // SAFETY: `tox` is a fresh instance; the trampolines match the callback signatures.
        unsafe { callbacks::register(tox.as_ptr()) };
        let mut instance = Instance { tox };
        if !options.name.is_empty() {
            instance.set_name(&options.name)?;
        }
        Ok(instance)
    }

    fn ptr(&self) -> *mut sys::Tox {
        self.tox.as_ptr()
    }

    /// Runs one iteration; callbacks append to `sink`.
    pub(crate) fn iterate(&mut self, sink: &mut Sink) {
        let user_data = (sink as *mut Sink).cast::<std::ffi::c_void>();
        // SAFETY: the callbacks registered in `new` cast `user_data` back to `&mut Sink`; `sink`
        // outlives this call and nothing else aliases it during it.
        unsafe { sys::tox_iterate(self.ptr(), user_data) }
    }

    pub(crate) fn iteration_interval(&self) -> u32 {
        // SAFETY: valid instance.
        unsafe { sys::tox_iteration_interval(self.ptr()) }
    }

    pub(crate) fn address(&self) -> ToxId {
        let mut buf = [0u8; TOX_ID_SIZE];
        // SAFETY: the buffer has tox_address_size() bytes (checked by a test), as the call requires.
        unsafe { sys::tox_self_get_address(self.ptr(), buf.as_mut_ptr()) };
        ToxId::from_bytes(&buf).expect("c-toxcore returns a valid address")
    }

    pub(crate) fn dht_id(&self) -> PublicKey {
        let mut buf = [0u8; 32];
        // SAFETY: the buffer has TOX_PUBLIC_KEY_SIZE bytes.
        unsafe { sys::tox_self_get_dht_id(self.ptr(), buf.as_mut_ptr()) };
        PublicKey(buf)
    }

    /// The long-term secret key; envelopes sealed to our public key open with it.
    /// The copy made here is wiped; the key's own `Drop` wipes what it keeps (see docs/security.md).
    pub(crate) fn secret_key(&self) -> toxmail_protocol::SecretKey {
        let mut buf = Zeroizing::new([0u8; 32]);
        // SAFETY: the buffer has TOX_SECRET_KEY_SIZE bytes.
        unsafe { sys::tox_self_get_secret_key(self.ptr(), buf.as_mut_ptr()) };
        toxmail_protocol::SecretKey::from(*buf)
    }

    pub(crate) fn udp_port(&self) -> Option<u16> {
        let mut err = sys::Tox_Err_Get_Port::TOX_ERR_GET_PORT_OK;
        // SAFETY: valid instance; `err` is written.
        let port = unsafe { sys::tox_self_get_udp_port(self.ptr(), &mut err) };
        (err == sys::Tox_Err_Get_Port::TOX_ERR_GET_PORT_OK).then_some(port)
    }

    pub(crate) fn self_connection(&self) -> Connection {
        // SAFETY: valid instance.
        Connection::from_sys(unsafe { sys::tox_self_get_connection_status(self.ptr()) })
    }

    pub(crate) fn set_nospam(&mut self, nospam: u32) {
        // SAFETY: valid instance.
        unsafe { sys::tox_self_set_nospam(self.ptr(), nospam) }
    }

    pub(crate) fn set_name(&mut self, name: &str) -> Result<()> {
        let mut err = sys::Tox_Err_Set_Info::TOX_ERR_SET_INFO_OK;
        // SAFETY: pointer and length describe `name`.
        let ok = unsafe { sys::tox_self_set_name(self.ptr(), name.as_ptr(), name.len(), &mut err) };
        ok.then_some(())
            .ok_or(RuntimeError::tox("tox_self_set_name", err.0))
    }

    pub(crate) fn bootstrap(&mut self, host: &str, port: u16, key: &PublicKey) -> Result<()> {
        let c_host = CString::new(host).map_err(|_| RuntimeError::BadBootstrapHost(host.into()))?;
        let mut err = sys::Tox_Err_Bootstrap::TOX_ERR_BOOTSTRAP_OK;
        // SAFETY: `c_host` is NUL-terminated; the key has 32 bytes.
        let ok = unsafe {
            sys::tox_bootstrap(self.ptr(), c_host.as_ptr(), port, key.0.as_ptr(), &mut err)
        };
        ok.then_some(())
            .ok_or(RuntimeError::tox("tox_bootstrap", err.0))
    }

    /// The full state, secret key included: wiped when dropped.
    pub(crate) fn savedata(&self) -> Zeroizing<Vec<u8>> {
        // SAFETY: valid instance.
        let size = unsafe { sys::tox_get_savedata_size(self.ptr()) };
        let mut buf = Zeroizing::new(vec![0u8; size]);
        // SAFETY: `buf` holds exactly tox_get_savedata_size bytes.
        unsafe { sys::tox_get_savedata(self.ptr(), buf.as_mut_ptr()) };
        buf
    }

    pub(crate) fn friend_add(&mut self, id: &ToxId, message: &[u8]) -> Result<u32> {
        let mut err = sys::Tox_Err_Friend_Add::TOX_ERR_FRIEND_ADD_OK;
        // SAFETY: the address has 38 bytes; pointer and length describe `message`.
        let n = unsafe {
            sys::tox_friend_add(
                self.ptr(),
                id.as_bytes().as_ptr(),
                message.as_ptr(),
                message.len(),
                &mut err,
            )
        };
        (err == sys::Tox_Err_Friend_Add::TOX_ERR_FRIEND_ADD_OK)
            .then_some(n)
            .ok_or(RuntimeError::tox("tox_friend_add", err.0))
    }

    pub(crate) fn friend_add_norequest(&mut self, pk: &PublicKey) -> Result<u32> {
        let mut err = sys::Tox_Err_Friend_Add::TOX_ERR_FRIEND_ADD_OK;
        // SAFETY: the key has 32 bytes.
        let n = unsafe { sys::tox_friend_add_norequest(self.ptr(), pk.0.as_ptr(), &mut err) };
        (err == sys::Tox_Err_Friend_Add::TOX_ERR_FRIEND_ADD_OK)
            .then_some(n)
            .ok_or(RuntimeError::tox("tox_friend_add_norequest", err.0))
    }

    pub(crate) fn friend_delete(&mut self, friend: u32) -> Result<()> {
        let mut err = sys::Tox_Err_Friend_Delete::TOX_ERR_FRIEND_DELETE_OK;
        // SAFETY: valid instance; unknown friend numbers are reported through `err`.
        let ok = unsafe { sys::tox_friend_delete(self.ptr(), friend, &mut err) };
        ok.then_some(())
            .ok_or(RuntimeError::tox("tox_friend_delete", err.0))
    }

    pub(crate) fn friend_by_public_key(&self, pk: &PublicKey) -> Option<u32> {
        let mut err = sys::Tox_Err_Friend_By_Public_Key::TOX_ERR_FRIEND_BY_PUBLIC_KEY_OK;
        // SAFETY: the key has 32 bytes.
        let n = unsafe { sys::tox_friend_by_public_key(self.ptr(), pk.0.as_ptr(), &mut err) };
        (err == sys::Tox_Err_Friend_By_Public_Key::TOX_ERR_FRIEND_BY_PUBLIC_KEY_OK).then_some(n)
    }

    pub(crate) fn friend_public_key(&self, friend: u32) -> Option<PublicKey> {
        let mut buf = [0u8; 32];
        let mut err = sys::Tox_Err_Friend_Get_Public_Key::TOX_ERR_FRIEND_GET_PUBLIC_KEY_OK;
        // SAFETY: the buffer has 32 bytes.
        let ok = unsafe {
            sys::tox_friend_get_public_key(self.ptr(), friend, buf.as_mut_ptr(), &mut err)
        };
        ok.then_some(PublicKey(buf))
    }

    pub(crate) fn friend_connection(&self, friend: u32) -> Connection {
        let mut err = sys::Tox_Err_Friend_Query::TOX_ERR_FRIEND_QUERY_OK;
        // SAFETY: valid instance; unknown friends report through `err`.
        let c = unsafe { sys::tox_friend_get_connection_status(self.ptr(), friend, &mut err) };
        Connection::from_sys(c)
    }

    pub(crate) fn friend_list(&self) -> Vec<u32> {
        // SAFETY: valid instance.
        let size = unsafe { sys::tox_self_get_friend_list_size(self.ptr()) };
        let mut list = vec![0u32; size];
        // SAFETY: `list` has room for exactly `size` friend numbers; no call in between changes it.
        unsafe { sys::tox_self_get_friend_list(self.ptr(), list.as_mut_ptr()) };
        list
    }

    /// Sends one lossless packet; `QueueFull` means "try again after an iteration".
    pub(crate) fn send_lossless(
        &mut self,
        friend: u32,
        data: &[u8],
    ) -> std::result::Result<(), ChunkError> {
        let mut err = sys::Tox_Err_Friend_Custom_Packet::TOX_ERR_FRIEND_CUSTOM_PACKET_OK;
        // SAFETY: pointer and length describe `data`; c-toxcore checks the length and first byte.
        let ok = unsafe {
            sys::tox_friend_send_lossless_packet(
                self.ptr(),
                friend,
                data.as_ptr(),
                data.len(),
                &mut err,
            )
        };
        match (ok, err) {
            (true, _) => Ok(()),
            (false, sys::Tox_Err_Friend_Custom_Packet::TOX_ERR_FRIEND_CUSTOM_PACKET_SENDQ) => {
                Err(ChunkError::QueueFull)
            }
            (false, e) => Err(ChunkError::Gone(e.0)),
        }
    }

    pub(crate) fn file_send(
        &mut self,
        friend: u32,
        size: u64,
        file_id: &[u8; 32],
        name: &[u8],
    ) -> Result<u32> {
        let mut err = sys::Tox_Err_File_Send::TOX_ERR_FILE_SEND_OK;
        // SAFETY: the file id has TOX_FILE_ID_LENGTH bytes; pointer and length describe `name`.
        let n = unsafe {
            sys::tox_file_send(
                self.ptr(),
                friend,
                sys::Tox_File_Kind::TOX_FILE_KIND_DATA.0,
                size,
                file_id.as_ptr(),
                name.as_ptr(),
                name.len(),
                &mut err,
            )
        };
        (err == sys::Tox_Err_File_Send::TOX_ERR_FILE_SEND_OK)
            .then_some(n)
            .ok_or(RuntimeError::tox("tox_file_send", err.0))
    }

    pub(crate) fn file_control(&mut self, friend: u32, file: u32, c: FileControl) -> Result<()> {
        let mut err = sys::Tox_Err_File_Control::TOX_ERR_FILE_CONTROL_OK;
        // SAFETY: valid instance; bad numbers report through `err`.
        let ok = unsafe { sys::tox_file_control(self.ptr(), friend, file, c.to_sys(), &mut err) };
        ok.then_some(())
            .ok_or(RuntimeError::tox("tox_file_control", err.0))
    }

    pub(crate) fn file_seek(&mut self, friend: u32, file: u32, position: u64) -> Result<()> {
        let mut err = sys::Tox_Err_File_Seek::TOX_ERR_FILE_SEEK_OK;
        // SAFETY: valid instance; bad numbers or positions report through `err`.
        let ok = unsafe { sys::tox_file_seek(self.ptr(), friend, file, position, &mut err) };
        ok.then_some(())
            .ok_or(RuntimeError::tox("tox_file_seek", err.0))
    }

    pub(crate) fn file_send_chunk(
        &mut self,
        friend: u32,
        file: u32,
        position: u64,
        data: &[u8],
    ) -> std::result::Result<(), ChunkError> {
        let mut err = sys::Tox_Err_File_Send_Chunk::TOX_ERR_FILE_SEND_CHUNK_OK;
        // SAFETY: pointer and length describe `data`.
        let ok = unsafe {
            sys::tox_file_send_chunk(
                self.ptr(),
                friend,
                file,
                position,
                data.as_ptr(),
                data.len(),
                &mut err,
            )
        };
        match (ok, err) {
            (true, _) => Ok(()),
            (false, sys::Tox_Err_File_Send_Chunk::TOX_ERR_FILE_SEND_CHUNK_SENDQ) => {
                Err(ChunkError::QueueFull)
            }
            (false, e) => Err(ChunkError::Gone(e.0)),
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // SAFETY: the pointer came from tox_new and is killed exactly once, here, on the owner thread.
        unsafe { sys::tox_kill(self.tox.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linked_library_sizes_match_the_protocol_crate() {
        // SAFETY: pure functions returning constants.
        let (address, pk, file_id, packet) = unsafe {
            (
                sys::tox_address_size(),
                sys::tox_public_key_size(),
                sys::tox_file_id_length(),
                sys::tox_max_custom_packet_size(),
            )
        };
        assert_eq!(address as usize, TOX_ID_SIZE);
        assert_eq!(pk as usize, toxmail_protocol::PUBLIC_KEY_SIZE);
        assert_eq!(file_id as usize, toxmail_protocol::MESSAGE_ID_SIZE);
        assert_eq!(packet as usize, toxmail_protocol::MAX_FRAME_SIZE);
    }

    /// Compiles only for types that wipe themselves on drop (reading freed memory would be UB).
    fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>(_: &T) {}

    #[test]
    fn savedata_copies_are_wiped_on_drop_and_hold_the_secret_key() {
        let tox = Instance::new(&Options::loopback(), None).unwrap();
        let data = tox.savedata();
        wiped_on_drop(&data);
        let secret = tox.secret_key().to_bytes();
        assert!(
            data.windows(32).any(|w| w == secret),
            "why it must be wiped"
        );
    }
}
