//! The writer task of one outbound stream.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use libp2p::Stream;
use libp2p::futures::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::behaviour::OpenError;
use super::{Load, StreamEvent, WRITE_COALESCE_BYTES};
use crate::wire::{Channel, write_stream_frame};

/// Owns one outbound stream: waits for it to be opened, then writes the frames the driver
/// hands over, coalescing those waiting into one write, until the driver drops its sender,
/// the stream fails, or nothing was sent for `idle` (`super::stream_idle`).
///
/// The peer never writes on the stream, so a pending read on it ends only when the peer's
/// side is gone; the writer watches for that and ends at once rather than at its next
/// write. Delivery stays best-effort: what was handed to a writer whose stream failed is
/// lost, and the next frame starts a new writer.
pub(super) async fn write_stream(
    open: oneshot::Receiver<Result<Stream, OpenError>>,
    (peer, ch, id): (libp2p::PeerId, Channel, u64),
    idle: std::time::Duration,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    load: Arc<Load>,
    events: mpsc::Sender<StreamEvent>,
) {
    let result: Result<(), String> = async {
        let stream = open
            .await
            .unwrap_or(Err(OpenError::NotConnected))
            .map_err(|e| e.to_string())?;
        let (mut rd, mut wr) = stream.split();
        // Grows to what this peer's traffic needs (a few hundred bytes for control messages,
        // about WRITE_COALESCE_BYTES plus a frame while blocks flow).
        let mut buf = Vec::new();
        let mut probe = [0u8; 1];
        loop {
            let next = tokio::select! {
                r = tokio::time::timeout(idle, rx.recv()) => r,
                _ = rd.read(&mut probe) => {
                    return Err("stream closed by the peer".to_string());
                }
            };
            let first = match next {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(_) => {
                    // Idle: refuse further frames, but write those already handed over.
                    rx.close();
                    match rx.try_recv() {
                        Ok(f) => f,
                        Err(_) => break,
                    }
                }
            };
            buf.clear();
            let mut frames = 1;
            let mut bytes = first.len();
            write_stream_frame(&mut buf, &first);
            while buf.len() < WRITE_COALESCE_BYTES
                && let Ok(f) = rx.try_recv()
            {
                write_stream_frame(&mut buf, &f);
                frames += 1;
                bytes += f.len();
            }
            let written = write_flush(&mut wr, &buf).await;
            load.frames.fetch_sub(frames, Ordering::Relaxed);
            load.bytes.fetch_sub(bytes, Ordering::Relaxed);
            written.map_err(|e| e.to_string())?;
        }
        // The driver let go, or idle: end the stream cleanly (the peer's reader sees its end
        // and stops).
        let _ = wr.close().await;
        Ok(())
    }
    .await;
    let _ = events
        .send(StreamEvent::WriterClosed {
            peer,
            ch,
            id,
            error: result.err(),
        })
        .await;
}

/// Writes `bytes` and flushes them.
async fn write_flush(
    wr: &mut (impl libp2p::futures::AsyncWrite + Unpin),
    bytes: &[u8],
) -> std::io::Result<()> {
    wr.write_all(bytes).await?;
    wr.flush().await
}
