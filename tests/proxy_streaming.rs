//! Bodies stream through the gateway in both directions, byte for byte, without being buffered.
//!
//! Size: `STREAM_BYTES` (256 MiB by default, so a debug build finishes in reasonable time);
//! set `STEPGATE_TEST_STREAM_MIB=1024` to run the full 1 GiB transfer.

mod common;

use std::time::Duration;

use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use common::{EchoUpstream, Gateway, download_pattern_sha256, http_client, pattern_chunks};

/// Whole transfer, including hashing on both sides; generous for a loaded 2-core debug build.
const DEADLINE: Duration = Duration::from_secs(600);

fn stream_bytes() -> u64 {
    let mib = std::env::var("STEPGATE_TEST_STREAM_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(256);
    mib * 1024 * 1024
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_large_download_byte_for_byte() {
    let n = stream_bytes();
    let upstream = EchoUpstream::start().await;
    let gw = Gateway::builder().upstream(&upstream.url()).start().await;
    let transfer = async {
        let resp = http_client()
            .get(gw.url_for(&format!("/__download?bytes={n}")))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.content_length(),
            Some(n),
            "Content-Length is forwarded"
        );
        let mut stream = resp.bytes_stream();
        let mut hasher = Sha256::new();
        let mut len = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.expect("body chunk");
            len += chunk.len() as u64;
            hasher.update(&chunk);
        }
        (len, hex(&hasher.finalize()))
    };
    let (len, sha) = tokio::time::timeout(DEADLINE, transfer)
        .await
        .expect("download timed out");
    assert_eq!(len, n);
    assert_eq!(sha, download_pattern_sha256(n));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_large_chunked_download() {
    // Without a length the body is still streamed to the end, not cut or buffered.
    let n: u64 = 32 * 1024 * 1024 + 7;
    let upstream = EchoUpstream::start().await;
    let gw = Gateway::builder().upstream(&upstream.url()).start().await;
    let resp = tokio::time::timeout(
        DEADLINE,
        http_client()
            .get(gw.url_for(&format!("/__download?bytes={n}&chunked=1")))
            .send(),
    )
    .await
    .expect("timed out")
    .expect("request");
    assert_eq!(resp.status(), 200);
    let body = tokio::time::timeout(DEADLINE, resp.bytes())
        .await
        .expect("timed out")
        .expect("body");
    assert_eq!(body.len() as u64, n);
    assert_eq!(hex(&Sha256::digest(&body)), download_pattern_sha256(n));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_large_upload_byte_for_byte() {
    let n = stream_bytes();
    let upstream = EchoUpstream::start().await;
    let gw = Gateway::builder().upstream(&upstream.url()).start().await;
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(
        pattern_chunks(n).map(Ok::<_, std::io::Error>),
    ));
    let transfer = async {
        let resp = http_client()
            .put(gw.url_for("/upload"))
            .header("content-length", n)
            .body(body)
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200);
        resp.json::<serde_json::Value>().await.expect("json")
    };
    let json = tokio::time::timeout(DEADLINE, transfer)
        .await
        .expect("upload timed out");
    assert_eq!(json["body_len"], n);
    assert_eq!(json["body_sha256"], download_pattern_sha256(n));
    let seen = upstream.last_request().expect("forwarded");
    assert_eq!(
        seen.header_all("content-length"),
        [n.to_string()],
        "the upstream receives the exact length"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_chunked_upload() {
    let n: u64 = 32 * 1024 * 1024 + 5;
    let upstream = EchoUpstream::start().await;
    let gw = Gateway::builder().upstream(&upstream.url()).start().await;
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(
        pattern_chunks(n).map(Ok::<_, std::io::Error>),
    ));
    let resp = tokio::time::timeout(
        DEADLINE,
        http_client().post(gw.url_for("/upload")).body(body).send(),
    )
    .await
    .expect("timed out")
    .expect("request");
    assert_eq!(resp.status(), 200);
    let json: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(json["body_len"], n);
    assert_eq!(json["body_sha256"], download_pattern_sha256(n));
}
