//! A scripted stand-in for the relais server: one connection, driven frame
//! by frame from a test thread with the protocol crate. Every read is
//! bounded by a timeout, so a test that goes wrong fails instead of hanging.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use bytes::BytesMut;
use relais_protocol::{
    ClientFrame, FrameDecoder, Hello, ServerFrame, Welcome, MAX_FRAME_LEN, MAX_PAYLOAD, VERSION,
};

/// How long the fake server waits for the client before failing the test.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// A fake server running `script` on the first connection it accepts.
pub struct Script {
    addr: SocketAddr,
    handle: JoinHandle<()>,
}

impl Script {
    /// Binds 127.0.0.1:0 and runs `script` on a thread.
    pub fn start(script: impl FnOnce(&mut Conn) + Send + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            stream.set_read_timeout(Some(PATIENCE)).unwrap();
            script(&mut Conn {
                stream,
                buf: BytesMut::new(),
                decoder: FrameDecoder::new(MAX_FRAME_LEN),
            });
        });
        Self { addr, handle }
    }

    /// Where the client connects.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits for the script to finish, failing the test if it panicked.
    pub fn finish(self) {
        if let Err(panic) = self.handle.join() {
            std::panic::resume_unwind(panic);
        }
    }
}

/// The server's end of one connection.
pub struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    decoder: FrameDecoder,
}

impl Conn {
    /// The next frame from the client, or `None` at a clean end of stream.
    pub fn read_frame(&mut self) -> Option<ClientFrame> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(body) = self.decoder.decode(&mut self.buf).unwrap() {
                return Some(ClientFrame::decode(body).unwrap());
            }
            let n = self.stream.read(&mut chunk).expect("the client went quiet");
            if n == 0 {
                self.decoder.decode_eof(&self.buf).unwrap();
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads the next frame and checks it is `expected`.
    pub fn expect(&mut self, expected: ClientFrame) {
        assert_eq!(self.read_frame(), Some(expected));
    }

    /// Checks the client ends the stream with nothing more.
    pub fn expect_eof(&mut self) {
        assert_eq!(self.read_frame(), None);
    }

    /// Reads the client's `HELLO`.
    pub fn expect_hello(&mut self) -> Hello {
        match self.read_frame() {
            Some(ClientFrame::Hello(hello)) => hello,
            other => panic!("expected HELLO, got {other:?}"),
        }
    }

    /// Writes `frames` with a single write.
    pub fn send(&mut self, frames: &[ServerFrame]) {
        let mut out = BytesMut::new();
        for frame in frames {
            frame.encode(&mut out);
        }
        self.stream.write_all(&out).unwrap();
    }

    /// Reads the `HELLO` and answers with a `WELCOME` to the default room
    /// listing `members`, followed in the same write by `then`.
    pub fn welcome(&mut self, members: &[&str], then: &[ServerFrame]) -> Hello {
        let hello = self.expect_hello();
        assert_eq!(hello.version, VERSION);
        let mut frames = vec![welcome(members)];
        frames.extend_from_slice(then);
        self.send(&frames);
        hello
    }
}

/// A `WELCOME` to the default room with these members.
pub fn welcome(members: &[&str]) -> ServerFrame {
    ServerFrame::Welcome(Welcome {
        version: VERSION,
        max_payload: MAX_PAYLOAD as u32,
        room: relais_protocol::DEFAULT_ROOM.into(),
        members: members.iter().map(|m| m.to_string()).collect(),
        resume: None,
    })
}

/// A relayed `MESSAGE`.
pub fn message(sender: &str, payload: &'static str) -> ServerFrame {
    ServerFrame::Message {
        sender: sender.into(),
        payload: payload.into(),
    }
}
