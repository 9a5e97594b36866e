//! `source::lines`: numbered lines, errors naming the path and the line, bounded memory.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use flowgate::prelude::*;
use flowgate::source::{lines, Line, LinesErrorKind};
use flowgate::testing::LeakCheck;
use futures::{StreamExt, TryStreamExt};

/// A file of this test's own, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &[u8]) -> Self {
        let dir = std::env::temp_dir().join(format!("flowgate-lines-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn texts(all: &[Line]) -> Vec<&str> {
    all.iter().map(|line| line.text.as_str()).collect()
}

#[tokio::test]
async fn lines_are_numbered_from_one_without_their_endings() {
    let file = TempFile::new("endings.txt", b"one\r\ntwo\n\n  four  \nfive, no newline");
    let all: Vec<Line> = lines(&file.0).try_collect().await.unwrap();
    assert_eq!(
        texts(&all),
        ["one", "two", "", "  four  ", "five, no newline"]
    );
    assert_eq!(
        all.iter().map(|line| line.number).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    let empty = TempFile::new("empty.txt", b"");
    assert_eq!(lines(&empty.0).collect::<Vec<_>>().await.len(), 0);
    let newline = TempFile::new("newline.txt", b"\n");
    let one: Vec<Line> = lines(&newline.0).try_collect().await.unwrap();
    assert_eq!(texts(&one), [""], "one empty line");
}

#[tokio::test]
async fn invalid_utf8_is_an_error_naming_the_path_and_line_and_the_rest_follows() {
    let file = TempFile::new("bad.txt", b"fine\nalso fine\nbad \xff\xfe here\nafter\n");
    let all: Vec<_> = lines(&file.0).collect().await;
    assert_eq!(all.len(), 4);
    let error = all[2].as_ref().unwrap_err();
    assert_eq!(error.path(), file.0.as_path());
    assert_eq!(error.line(), Some(3));
    assert!(matches!(
        error.kind(),
        LinesErrorKind::InvalidUtf8 { valid_up_to: 4 }
    ));
    assert!(error.is_recoverable());
    assert_eq!(
        error.to_string(),
        format!(
            "{}: line 3: invalid UTF-8 at byte 4 of the line",
            file.0.display()
        )
    );
    let after = all[3].as_ref().unwrap();
    assert_eq!((after.number, after.text.as_str()), (4, "after"));
}

#[tokio::test]
async fn a_missing_file_is_one_error_at_the_first_poll_naming_the_path() {
    let path = std::env::temp_dir().join("flowgate-no-such-dir/missing.txt");
    let stream = lines(&path); // nothing is opened yet
    let all: Vec<_> = stream.collect().await;
    assert_eq!(all.len(), 1, "one error, then the end");
    let error = all[0].as_ref().unwrap_err();
    assert_eq!(error.line(), None);
    assert!(
        matches!(error.kind(), LinesErrorKind::Open(e) if e.kind() == std::io::ErrorKind::NotFound)
    );
    assert!(!error.is_recoverable());
    assert!(
        error
            .to_string()
            .starts_with(&format!("{}: cannot open: ", path.display())),
        "{error}"
    );
    assert!(
        std::error::Error::source(error).is_some(),
        "the io::Error is the source"
    );
}

#[tokio::test]
async fn a_read_error_names_the_line_and_ends_the_stream() {
    // A directory opens, and then cannot be read.
    let dir = std::env::temp_dir();
    let mut stream = lines(&dir);
    let error = stream.next().await.unwrap().unwrap_err();
    assert_eq!(error.line(), Some(1));
    assert!(matches!(error.kind(), LinesErrorKind::Read(_)));
    assert!(
        error.to_string().contains(": line 1: read error: "),
        "{error}"
    );
    assert!(stream.next().await.is_none());
    assert!(futures::stream::FusedStream::is_terminated(&stream));
}

#[tokio::test]
async fn a_line_over_the_limit_is_skipped_and_reported() {
    let long = "x".repeat(100_000);
    let contents = format!("short\n{long}\nexactly10!\r\nexactly 11!\nend");
    let file = TempFile::new("long.txt", contents.as_bytes());
    let all: Vec<_> = lines(&file.0).max_line_bytes(10).collect().await;
    assert_eq!(all.len(), 5);
    assert_eq!(all[0].as_ref().unwrap().text, "short");
    let error = all[1].as_ref().unwrap_err();
    assert_eq!(error.line(), Some(2));
    assert!(matches!(
        error.kind(),
        LinesErrorKind::TooLong { limit: 10 }
    ));
    assert!(error
        .to_string()
        .ends_with("line 2: longer than 10 bytes, skipped"));
    assert_eq!(
        all[2].as_ref().unwrap().text,
        "exactly10!",
        "its \\r is no part of it"
    );
    assert_eq!(all[3].as_ref().unwrap_err().line(), Some(4));
    assert_eq!(all[4].as_ref().unwrap().text, "end");
}

#[test]
#[should_panic(expected = "`max_line_bytes` needs `bytes` above zero on `lines`")]
fn a_zero_line_limit_is_refused() {
    let _ = lines("any.txt").max_line_bytes(0);
}

/// About 100 MB through a pipeline: lines are counted as held from when they are read
/// until the chunk holding them has been counted, and never more than the pipeline's
/// bound are held at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_file_is_read_in_constant_memory() {
    const LINES: usize = 1_000_000;
    const CHUNK: usize = 1_000;
    const LIMIT: usize = 2;
    let mut contents = Vec::with_capacity(LINES * 101);
    for i in 0..LINES {
        contents.extend_from_slice(format!("{i:>10} ").as_bytes());
        contents.extend_from_slice(&[b'w'; 88]);
        contents.push(b'\n');
    }
    let file = TempFile::new("big.txt", &contents);
    let size = contents.len();
    drop(contents);
    assert!(size >= 100_000_000, "{size} bytes");

    let leaks = LeakCheck::new();
    let held = Arc::new(AtomicUsize::new(0));
    let tokens = leaks.clone();
    let max_held = Arc::clone(&held);
    let counted: usize = lines(&file.0)
        .map(move |line| {
            let line = line.expect("the file is text");
            let token = tokens.token();
            max_held.fetch_max(tokens.live(), Ordering::SeqCst);
            (line, token)
        })
        .chunks(CHUNK)
        .par_map_unordered(LIMIT, |chunk: Vec<(Line, _)>| {
            chunk
                .iter()
                .map(|(line, _)| line.text.len() + 1)
                .sum::<usize>()
        })
        .fold(0, |total, bytes| async move { total + bytes })
        .await;
    assert_eq!(counted, size, "every byte of every line");
    let max = held.load(Ordering::SeqCst);
    // LIMIT chunks pulled and not yet counted, plus the chunk being filled.
    assert!(
        max <= (LIMIT + 1) * CHUNK,
        "{max} lines held at once, more than {}",
        (LIMIT + 1) * CHUNK
    );
    // The blocking lane's loops end on their threads, in real time.
    leaks
        .assert_none_left_within_time(std::time::Duration::from_secs(10))
        .await;
}
