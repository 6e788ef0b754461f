//! Many nodes on one owner thread, with real c-toxcore instances on 127.0.0.1: they befriend,
//! exchange packets and files while another node on the same thread stops; and a UDP port range
//! with no free port left is refused with a clear error.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tox_runtime::{Event, Node, Options, RuntimeError, swarm};
use toxmail_protocol::friend_request_message;

const WAIT: Duration = Duration::from_secs(120);

/// The first event `pick` takes, within `WAIT`.
async fn until<T>(
    events: &mut UnboundedReceiver<Event>,
    mut pick: impl FnMut(Event) -> Option<T>,
) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            let event = events.recv().await.expect("event stream ended");
            if let Some(t) = pick(event) {
                return t;
            }
        }
    })
    .await
    .expect("event within the wait")
}

/// Threads of this process whose name says they own Tox instances.
fn owner_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter(|t| {
            let comm = std::fs::read_to_string(t.as_ref().unwrap().path().join("comm"));
            comm.is_ok_and(|c| c.starts_with("tox-owner"))
        })
        .count()
}

#[tokio::test]
async fn nodes_sharing_one_owner_thread_befriend_and_transfer_while_another_stops() {
    tox_runtime::set_owner_threads(1);
    let a = Node::start(Options::loopback()).await.unwrap();
    let mut b = Node::start(Options::loopback()).await.unwrap();
    let mut c = Node::start(Options::loopback()).await.unwrap();
    assert_eq!(owner_threads(), 1, "three nodes, one thread");
    swarm::link(&[
        (&a.handle, &a.info),
        (&b.handle, &b.info),
        (&c.handle, &c.info),
    ])
    .await
    .unwrap();

    // a befriends b and c; both accept.
    for peer in [&b, &c] {
        let request = friend_request_message("owner threads");
        a.handle
            .friend_add(peer.info.address, request)
            .await
            .unwrap();
    }
    for peer in [&mut b, &mut c] {
        let key = until(&mut peer.events, |e| match e {
            Event::FriendRequest { public_key, .. } => Some(public_key),
            _ => None,
        })
        .await;
        assert_eq!(key, a.info.public_key);
        peer.handle.friend_add_norequest(key).await.unwrap();
    }
    assert!(swarm::wait_friend_online(&a.handle, &c.info.public_key, WAIT).await);

    // c stops (as a crash would: no save); its handle says so, a and b go on.
    let c_handle = c.handle.clone();
    c.kill().await;
    assert!(matches!(c_handle.info().await, Err(RuntimeError::Stopped)));
    assert!(swarm::wait_friend_online(&a.handle, &b.info.public_key, WAIT).await);
    let friend = a
        .handle
        .friends()
        .await
        .unwrap()
        .into_iter()
        .find(|f| f.public_key == b.info.public_key)
        .unwrap()
        .friend;

    a.handle
        .send_packet(friend, vec![160, 1, 2, 3])
        .await
        .unwrap();
    let data = until(&mut b.events, |e| match e {
        Event::Packet { data, .. } => Some(data),
        _ => None,
    })
    .await;
    assert_eq!(data, [160, 1, 2, 3]);

    let file: Arc<[u8]> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    a.handle
        .file_send(friend, [7; 32], file.clone(), b"letter".to_vec())
        .await
        .unwrap();
    let (from, number) = until(&mut b.events, |e| match e {
        Event::FileRecv {
            friend,
            file,
            file_id,
            ..
        } if file_id == [7; 32] => Some((friend, file)),
        _ => None,
    })
    .await;
    b.handle.file_accept(from, number, 0).await.unwrap();
    let mut got = Vec::new();
    until(&mut b.events, |e| match e {
        Event::FileChunk { data, .. } if data.is_empty() => Some(()),
        Event::FileChunk { position, data, .. } => {
            assert_eq!(position, got.len() as u64);
            got.extend_from_slice(&data);
            None
        }
        _ => None,
    })
    .await;
    assert!(got == *file, "the file arrived whole");
    assert_eq!(owner_threads(), 1);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_port_range_without_a_free_port_is_refused_clearly() {
    let first = Node::start(Options::loopback()).await.unwrap();
    let port = first.info.udp_port.unwrap();
    let mut o = Options::loopback();
    (o.start_port, o.end_port) = (port, port);
    let err = Node::start(o).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "c-toxcore could not start: no free UDP port in the configured range"
    );
    // The node holding the port is unaffected.
    assert_eq!(first.handle.info().await.unwrap(), first.info);
}

#[tokio::test]
async fn a_node_without_udp_needs_no_port() {
    let mut o = Options::loopback();
    o.udp = false;
    let node = Node::start(o).await.unwrap();
    assert_eq!(node.info.udp_port, None);
    node.shutdown().await;
}
