//! A TCP link a test can cut: a client given its address reaches the target
//! through it, until the test cuts it (every connection is closed, new ones
//! are closed as they arrive) and after it restores it, as a network
//! partition between that client alone and the target would. It counts the
//! connections it accepted.

use std::io::copy;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A forwarder from a free loopback port to a target.
pub struct Link {
    /// Where clients connect.
    pub address: SocketAddr,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    accepted: Arc<AtomicUsize>,
}

impl Link {
    /// Forwards connections to `target` from a new loopback address.
    pub fn to(target: SocketAddr) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let address = listener.local_addr().expect("bound address");
        let cut = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (accepting_cut, accepting_open, counting) =
            (cut.clone(), open.clone(), accepted.clone());
        std::thread::spawn(move || {
            for incoming in listener.incoming().flatten() {
                counting.fetch_add(1, Ordering::SeqCst);
                if accepting_cut.load(Ordering::SeqCst) {
                    continue;
                }
                if let Ok(outgoing) = TcpStream::connect(target) {
                    forward(incoming, outgoing, &accepting_open);
                }
            }
        });
        Link {
            address,
            cut,
            open,
            accepted,
        }
    }

    /// Connections accepted so far, refused ones included.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Closes every connection and refuses new ones until [`Link::restore`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for stream in self.open.lock().expect("open streams").drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// Copies both ways between `a` and `b` until either side closes, keeping
/// both streams in `open` so that a cut can close them.
fn forward(a: TcpStream, b: TcpStream, open: &Mutex<Vec<TcpStream>>) {
    let streams = [a.try_clone(), b.try_clone(), a.try_clone(), b.try_clone()];
    let [Ok(a_in), Ok(b_out), Ok(a_kept), Ok(b_kept)] = streams else {
        return;
    };
    open.lock().expect("open streams").extend([a_kept, b_kept]);
    for (mut from, mut to) in [(a, b), (b_out, a_in)] {
        std::thread::spawn(move || {
            let _ = copy(&mut from, &mut to);
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
        });
    }
}
