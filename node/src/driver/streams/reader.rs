//! The reader task of one inbound stream.

use std::time::Duration;

use libp2p::futures::io::BufReader;
use libp2p::futures::{AsyncBufReadExt, AsyncRead};
use tokio::sync::mpsc;

use super::StreamEvent;
use crate::wire::{Channel, StreamFrame, read_stream_frame};

/// Reads length-prefixed frames from one inbound stream and hands them to the driver,
/// waiting while the driver's channel is full (back-pressure to the sender).
///
/// A stream may stay idle between frames for as long as the peer likes (streams are
/// long-lived), but once a frame's first byte arrived the whole frame must arrive within
/// `deadline`: a peer that starts a frame and stalls is reported
/// ([`StreamEvent::Stalled`]) and its stream dropped, so it cannot pin a reader and its
/// buffer for ever. The frame's buffer grows with the bytes that arrive
/// ([`crate::wire::FRAME_BUFFER_START`]).
pub(super) async fn read_stream<S: AsyncRead + Unpin>(
    peer: libp2p::PeerId,
    ch: Channel,
    stream: S,
    deadline: Duration,
    events: mpsc::Sender<StreamEvent>,
) {
    let mut io = BufReader::with_capacity(ch.read_buffer(), stream);
    loop {
        // Wait, without a deadline, for the next frame to begin.
        match io.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(_) => {}
        }
        let read = tokio::time::timeout(deadline, read_stream_frame(&mut io, ch.max_frame()));
        let ev = match read.await {
            Ok(Ok(Some(StreamFrame::Data(frame)))) => StreamEvent::Frame { peer, ch, frame },
            Ok(Ok(Some(StreamFrame::Oversized(_)))) => StreamEvent::Oversized { peer, ch },
            Err(_) => StreamEvent::Stalled { peer, ch },
            // A clean end, or the stream or connection failed: nothing to penalise.
            Ok(Ok(None)) | Ok(Err(_)) => break,
        };
        let stop = !matches!(ev, StreamEvent::Frame { .. });
        if events.send(ev).await.is_err() || stop {
            break;
        }
    }
    let _ = events.send(StreamEvent::ReaderClosed { peer, ch }).await;
}

#[cfg(test)]
mod tests {
    use libp2p::futures::TryStreamExt;
    use libp2p::futures::channel::mpsc as fmpsc;

    use super::*;
    use crate::wire::write_stream_frame;

    /// A stream whose bytes the test sends piece by piece.
    fn pipe() -> (
        fmpsc::UnboundedSender<std::io::Result<Vec<u8>>>,
        impl AsyncRead + Unpin,
    ) {
        let (tx, rx) = fmpsc::unbounded();
        (tx, rx.into_async_read())
    }

    async fn next(rx: &mut mpsc::Receiver<StreamEvent>) -> StreamEvent {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("the reader reports within 10 s")
            .expect("the reader reports before it ends")
    }

    #[tokio::test]
    async fn a_frame_that_starts_and_stalls_is_cut_off_but_an_idle_stream_is_not() {
        const DEADLINE: Duration = Duration::from_millis(200);
        let peer = libp2p::PeerId::random();
        let (tx, stream) = pipe();
        let (events, mut rx) = mpsc::channel(8);
        let reader = tokio::spawn(read_stream(peer, Channel::Dht, stream, DEADLINE, events));

        // Idle for several deadlines between frames: nothing happens, and the frame that
        // follows arrives whole.
        tokio::time::sleep(3 * DEADLINE).await;
        assert!(rx.try_recv().is_err(), "an idle stream is not cut off");
        let mut frame = Vec::new();
        write_stream_frame(&mut frame, b"hello");
        tx.unbounded_send(Ok(frame)).unwrap();
        assert!(
            matches!(next(&mut rx).await, StreamEvent::Frame { frame, .. } if frame == b"hello")
        );

        // A frame announcing 100 bytes of which 10 arrive, then nothing.
        let started = tokio::time::Instant::now();
        let mut partial = 100u32.to_be_bytes().to_vec();
        partial.extend_from_slice(&[1; 10]);
        tx.unbounded_send(Ok(partial)).unwrap();
        assert!(matches!(next(&mut rx).await, StreamEvent::Stalled { .. }));
        assert!(
            started.elapsed() >= DEADLINE,
            "cut off at the deadline, not before"
        );
        assert!(matches!(
            next(&mut rx).await,
            StreamEvent::ReaderClosed { .. }
        ));
        reader.await.unwrap();
        drop(tx);
    }
}
