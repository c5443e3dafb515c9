//! Tests of the partition log as a whole: real v2 batches on real files in a temp dir, with
//! time passed in.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use super::batch::testing::batch;
use super::segment::{INDEX_EXT, LOG_EXT, TIME_INDEX_EXT, segment_path};
use super::*;

const EPOCH: i32 = 3;

/// A config with small segments, an index entry per batch, and no retention.
fn small(segment_bytes: u32) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 0,
        retention_ms: None,
        ..LogConfig::default()
    }
}

/// [`small`], fsyncing only every 1,000 records: what a crash can tear is the unflushed tail.
fn unflushed(segment_bytes: u32) -> LogConfig {
    LogConfig {
        flush: FlushPolicy {
            every_messages: Some(1_000),
            every_ms: None,
        },
        ..small(segment_bytes)
    }
}

fn open(dir: &Path, config: LogConfig) -> PartitionLog {
    PartitionLog::open(dir, config).expect("open log")
}

/// Appends `n` single-record batches with timestamps `ts0, ts0 + 1, …`; returns their sizes.
fn append_n(log: &PartitionLog, n: usize, ts0: i64) -> Vec<usize> {
    (0..n)
        .map(|i| {
            let value = format!("value-{i:04}");
            let bytes = batch(ts0 + i as i64, &[value.as_bytes()]);
            log.append(&bytes, EPOCH, 0).expect("append");
            bytes.len()
        })
        .collect()
}

/// Base offsets and record counts of the batches in `records`, checking each batch's CRC.
fn offsets_of(records: &[u8]) -> Vec<(i64, i32)> {
    Batches::new(records)
        .map(|b| {
            let b = b.expect("valid batch read back");
            (b.header().base_offset, b.header().record_count)
        })
        .collect()
}

/// Every offset in the log, read from `from` in chunks of `max_bytes`.
fn read_all(log: &PartitionLog, from: i64, max_bytes: usize) -> Vec<i64> {
    let mut offsets = Vec::new();
    let mut next = from;
    loop {
        let read = log.read(next, max_bytes).expect("read");
        if read.records.is_empty() {
            return offsets;
        }
        for (base, count) in offsets_of(&read.records) {
            offsets.extend(base..base + i64::from(count));
            next = base + i64::from(count);
        }
    }
}

fn append_to_file(path: &Path, bytes: &[u8]) {
    let mut file = OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open segment");
    file.write_all(bytes).expect("write garbage");
}

#[test]
fn append_assigns_contiguous_offsets_and_rewrites_the_epoch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), small(1 << 20));
    let first = log
        .append(&batch(10, &[b"a", b"b", b"c"]), EPOCH, 0)
        .expect("append");
    assert_eq!((first.base_offset, first.last_offset), (0, 2));
    assert_eq!(first.max_timestamp, 10);
    assert!(first.flushed, "default policy fsyncs every append");
    let second = log.append(&batch(11, &[b"d"]), EPOCH, 0).expect("append");
    assert_eq!((second.base_offset, second.last_offset), (3, 3));
    assert_eq!(log.log_end_offset(), 4);

    let read = log.read(0, 1 << 20).expect("read");
    assert_eq!(offsets_of(&read.records), vec![(0, 3), (3, 1)]);
    let epochs: Vec<i32> = Batches::new(&read.records)
        .map(|b| b.expect("valid").header().partition_leader_epoch)
        .collect();
    assert_eq!(epochs, vec![EPOCH, EPOCH]);
    assert_eq!((read.log_start_offset, read.log_end_offset), (0, 4));
}

#[test]
fn multiple_batches_in_one_append() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), small(1 << 20));
    let records = [
        batch(1, &[b"a", b"b"]),
        batch(2, &[b"c"]),
        batch(5, &[b"d", b"e", b"f"]),
    ]
    .concat();
    let info = log.append(&records, EPOCH, 0).expect("append");
    assert_eq!(
        (info.base_offset, info.last_offset, info.max_timestamp),
        (0, 5, 5)
    );
    let read = log.read(0, 1 << 20).expect("read");
    assert_eq!(offsets_of(&read.records), vec![(0, 2), (2, 1), (3, 3)]);
}

#[test]
fn an_append_of_more_batches_than_one_vectored_write_takes_is_written_whole() {
    // Each batch is written as two parts (its rewritten prefix and the rest of its bytes) and
    // one `pwritev` takes at most 1,024: 1,500 batches take three calls.
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), small(1 << 24));
    let batches: Vec<Vec<u8>> = (0..1_500)
        .map(|i: i64| batch(i, &[format!("value-{i}").as_bytes()]))
        .collect();
    let records = batches.concat();
    log.append(&batch(0, &[b"first"]), EPOCH, 0)
        .expect("append");
    let info = log.append(&records, EPOCH + 1, 0).expect("append");
    assert_eq!((info.base_offset, info.last_offset), (1, 1_500));

    let check = |log: &PartitionLog| {
        let read = log.read(1, 1 << 24).expect("read");
        assert_eq!(read.records.len(), records.len());
        for (i, stored) in Batches::new(&read.records).enumerate() {
            let stored = stored.expect("a valid batch read back");
            assert_eq!(stored.header().base_offset, i as i64 + 1);
            assert_eq!(stored.header().partition_leader_epoch, EPOCH + 1);
            // Past the rewritten fields, the batch is the appended bytes.
            assert_eq!(stored.bytes()[16..], batches[i][16..]);
        }
    };
    check(&log);
    drop(log);
    check(&open(dir.path(), small(1 << 24)));
}

#[test]
fn rejects_bad_appends_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(
        dir.path(),
        LogConfig {
            max_message_bytes: 200,
            ..small(1 << 20)
        },
    );
    let mut corrupt = batch(1, &[b"payload"]);
    let last = corrupt.len() - 3;
    corrupt[last] ^= 0x55;
    let good = batch(1, &[b"ok"]);
    let err = log
        .append(&[good.clone(), corrupt].concat(), EPOCH, 0)
        .expect_err("CRC mismatch");
    assert!(
        matches!(err, LogError::InvalidBatch(BatchError::CrcMismatch { .. })),
        "{err}"
    );

    let err = log.append(&[], EPOCH, 0).expect_err("empty");
    assert!(matches!(err, LogError::NoRecords), "{err}");

    let big = batch(1, &[&[7u8; 300]]);
    let err = log.append(&big, EPOCH, 0).expect_err("too large");
    assert!(
        matches!(err, LogError::BatchTooLarge { max: 200, .. }),
        "{err}"
    );

    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(log.size_bytes(), 0);
    log.append(&good, EPOCH, 0)
        .expect("a good batch still appends");
    assert_eq!(log.log_end_offset(), 1);
}

#[test]
fn round_trip_across_segment_rolls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), small(300));
    let sizes = append_n(&log, 40, 1_000);
    assert!(log.segment_count() > 5, "{} segments", log.segment_count());
    assert_eq!(read_all(&log, 0, 1 << 20), (0..40).collect::<Vec<_>>());
    // Small reads still make progress, one batch at a time.
    assert_eq!(read_all(&log, 0, 1), (0..40).collect::<Vec<_>>());
    // Each segment holds whole batches and is named by its base offset.
    for segment in log.segments_for_test() {
        let name = segment
            .path()
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        assert_eq!(name, format!("{:020}.log", segment.base_offset()));
        assert!(segment.summary().size <= 300 || segment.summary().size == sizes[0] as u64);
    }
    // A read that spans segments returns batches from more than one.
    let read = log.read(0, 1 << 20).expect("read");
    assert_eq!(offsets_of(&read.records).len(), 40);
}

#[test]
fn read_from_a_middle_offset_uses_the_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(
        dir.path(),
        LogConfig {
            index_interval_bytes: 150,
            ..small(1 << 20)
        },
    );
    let records: Vec<Vec<u8>> = (0..30).map(|i| batch(i, &[b"xy", b"zw"])).collect();
    for r in &records {
        log.append(r, EPOCH, 0).expect("append");
    }
    let (offset_index, time_index) = log.segments_for_test()[0].index_entries();
    assert!(
        offset_index.len() > 3,
        "sparse but present: {offset_index:?}"
    );
    assert!(offset_index.len() < 30, "sparse: {}", offset_index.len());
    assert!(!time_index.is_empty());

    // Offset 33 is the second record of the batch at 32: that whole batch comes first.
    let read = log.read(33, 1).expect("read");
    assert_eq!(offsets_of(&read.records), vec![(32, 2)]);
    let read = log.read(40, 3 * records[0].len()).expect("read");
    assert_eq!(offsets_of(&read.records), vec![(40, 2), (42, 2), (44, 2)]);
    // At the log end: nothing. Past it, or before the start: out of range.
    assert!(log.read(60, 100).expect("read at end").records.is_empty());
    let err = log.read(61, 100).expect_err("past the end");
    assert!(
        matches!(
            err,
            LogError::OffsetOutOfRange {
                offset: 61,
                log_end_offset: 60,
                ..
            }
        ),
        "{err}"
    );
    // read_until stops below the bound.
    let read = log.read_until(10, 1 << 20, 14).expect("read");
    assert_eq!(offsets_of(&read.records), vec![(10, 2), (12, 2)]);
}

#[test]
fn offset_for_timestamp_finds_the_first_batch_reaching_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), small(400));
    // Timestamps 100, 110, …, 390; one record each, offsets 0..30.
    for i in 0..30 {
        log.append(&batch(100 + 10 * i, &[b"v"]), EPOCH, 0)
            .expect("append");
    }
    assert!(log.segment_count() > 2);
    let found = |ts| log.offset_for_timestamp(ts).expect("lookup");
    assert_eq!(
        found(0),
        Some(TimestampOffset {
            offset: 0,
            timestamp: 100
        })
    );
    assert_eq!(
        found(100),
        Some(TimestampOffset {
            offset: 0,
            timestamp: 100
        })
    );
    assert_eq!(
        found(101),
        Some(TimestampOffset {
            offset: 1,
            timestamp: 110
        })
    );
    assert_eq!(
        found(250),
        Some(TimestampOffset {
            offset: 15,
            timestamp: 250
        })
    );
    assert_eq!(
        found(385),
        Some(TimestampOffset {
            offset: 29,
            timestamp: 390
        })
    );
    assert_eq!(found(391), None);
}

#[test]
fn offset_for_timestamp_handles_out_of_order_timestamps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), small(1 << 20));
    for ts in [50, 10, 70, 20, 90, 30] {
        log.append(&batch(ts, &[b"v"]), EPOCH, 0).expect("append");
    }
    let found = |ts| {
        log.offset_for_timestamp(ts)
            .expect("lookup")
            .map(|t| t.offset)
    };
    assert_eq!(found(5), Some(0));
    assert_eq!(found(60), Some(2));
    assert_eq!(found(71), Some(4));
    assert_eq!(found(91), None);
}

#[test]
fn reopen_preserves_offsets_and_indexes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (indexes, end) = {
        let log = open(dir.path(), small(500));
        append_n(&log, 25, 0);
        log.close(0).expect("close");
        let err = log
            .append(&batch(1, &[b"late"]), EPOCH, 0)
            .expect_err("closed");
        assert!(matches!(err, LogError::Closed { .. }), "{err}");
        let indexes: Vec<_> = log
            .segments_for_test()
            .iter()
            .map(|s| s.index_entries())
            .collect();
        (indexes, log.log_end_offset())
    };
    assert!(dir.path().join(partition::CLEAN_SHUTDOWN_FILE).exists());
    let log = open(dir.path(), small(500));
    assert!(!dir.path().join(partition::CLEAN_SHUTDOWN_FILE).exists());
    assert_eq!(log.log_end_offset(), end);
    let reopened: Vec<_> = log
        .segments_for_test()
        .iter()
        .map(|s| s.index_entries())
        .collect();
    assert_eq!(reopened, indexes);
    let info = log
        .append(&batch(1, &[b"after"]), EPOCH, 0)
        .expect("append");
    assert_eq!(info.base_offset, 25);
    assert_eq!(read_all(&log, 0, 1 << 20), (0..26).collect::<Vec<_>>());
}

#[test]
fn an_unflushed_torn_tail_is_truncated_and_indexes_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (sizes, indexes) = {
        let log = open(dir.path(), unflushed(1 << 20));
        let sizes = append_n(&log, 10, 0);
        let indexes = log.segments_for_test()[0].index_entries();
        (sizes, indexes)
    };
    // Crash mid-write: cut the last batch in half, and lose the index files.
    let path = segment_path(dir.path(), 0, LOG_EXT);
    let full: usize = sizes.iter().sum();
    let cut = full - sizes[9] / 2;
    OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len(cut as u64))
        .expect("truncate");
    fs::remove_file(segment_path(dir.path(), 0, INDEX_EXT)).expect("rm index");
    fs::remove_file(segment_path(dir.path(), 0, TIME_INDEX_EXT)).expect("rm timeindex");

    let log = open(dir.path(), unflushed(1 << 20));
    assert_eq!(log.log_end_offset(), 9, "only the partial batch is gone");
    let kept = (full - sizes[9]) as u64;
    assert_eq!(fs::metadata(&path).expect("stat").len(), kept);
    let (offsets, times) = log.segments_for_test()[0].index_entries();
    assert_eq!(offsets, indexes.0[..offsets.len()].to_vec());
    assert_eq!(
        offsets.len(),
        9,
        "index.interval.bytes = 0: an entry per batch"
    );
    assert_eq!(times.len(), 9);
    assert!(segment_path(dir.path(), 0, INDEX_EXT).exists());
    assert_eq!(read_all(&log, 0, 1 << 20), (0..9).collect::<Vec<_>>());
    let info = log.append(&batch(1, &[b"next"]), EPOCH, 0).expect("append");
    assert_eq!(info.base_offset, 9);
}

#[test]
fn garbage_after_the_last_batch_is_truncated_even_after_a_clean_shutdown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let size = {
        let log = open(dir.path(), small(1 << 20));
        append_n(&log, 5, 0);
        log.close(0).expect("close");
        log.size_bytes()
    };
    let path = segment_path(dir.path(), 0, LOG_EXT);
    append_to_file(&path, &[0xde, 0xad, 0xbe, 0xef].repeat(40));
    let log = open(dir.path(), small(1 << 20));
    assert_eq!(log.log_end_offset(), 5);
    assert_eq!(fs::metadata(&path).expect("stat").len(), size);
    assert_eq!(read_all(&log, 0, 1 << 20), (0..5).collect::<Vec<_>>());
}

#[test]
fn a_corrupt_unflushed_batch_at_the_tail_is_dropped_with_everything_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sizes = {
        let log = open(dir.path(), unflushed(1 << 20));
        append_n(&log, 6, 0)
    };
    // Flip a payload byte of batch 4 (offsets 0..=5): batches 4 and 5 go.
    let path = segment_path(dir.path(), 0, LOG_EXT);
    let mut bytes = fs::read(&path).expect("read");
    let at: usize = sizes[..4].iter().sum::<usize>() + sizes[4] - 2;
    bytes[at] ^= 0xff;
    fs::write(&path, &bytes).expect("write");
    let log = open(dir.path(), unflushed(1 << 20));
    assert_eq!(log.log_end_offset(), 4);
}

/// Found by hand: after kill -9, one flipped byte in the middle of the active segment made
/// recovery cut 15 fsynced, acknowledged batches with one warning. Damage below the flushed
/// mark fails the open instead, naming the file and the position, and loses nothing.
#[test]
fn damage_to_flushed_batches_fails_open_instead_of_cutting_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sizes = {
        let log = open(dir.path(), small(1 << 20));
        append_n(&log, 20, 0)
        // Dropped without close: a crash.
    };
    let path = segment_path(dir.path(), 0, LOG_EXT);
    let mut bytes = fs::read(&path).expect("read");
    let at: usize = sizes[..5].iter().sum::<usize>() + sizes[5] - 2;
    bytes[at] ^= 0xff;
    fs::write(&path, &bytes).expect("write");
    let err = PartitionLog::open(dir.path(), small(1 << 20)).expect_err("flushed data is damaged");
    match &err {
        LogError::Corrupt {
            path: bad,
            position,
            reason,
        } => {
            assert_eq!(bad, &path);
            assert_eq!(*position, sizes[..5].iter().sum::<usize>() as u64);
            assert!(reason.contains("flushed"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    // Nothing was cut: the file is as it was.
    assert_eq!(fs::read(&path).expect("read").len(), bytes.len());
    // A file shorter than what was flushed is damage too.
    bytes[at] ^= 0xff;
    bytes.truncate(bytes.len() - 3);
    fs::write(&path, &bytes).expect("write");
    assert!(matches!(
        PartitionLog::open(dir.path(), small(1 << 20)),
        Err(LogError::Corrupt { .. })
    ));
}

#[test]
fn a_truncated_log_reopens_after_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = open(dir.path(), small(400));
        append_n(&log, 12, 0);
        assert_eq!(log.truncate_to(7, 0).expect("truncate"), 7);
        append_n(&log, 2, 100);
        // Dropped without close: a crash.
    }
    let log = open(dir.path(), small(400));
    assert_eq!(log.log_end_offset(), 9);
    assert_eq!(log.restart_at(50, 0).expect("restart"), 50);
    drop(log);
    let log = open(dir.path(), small(400));
    assert_eq!(log.log_end_offset(), 50);
}

#[test]
fn corruption_in_an_older_segment_fails_open_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = open(dir.path(), small(300));
        append_n(&log, 20, 0);
        assert!(log.segment_count() > 2);
    }
    let path = segment_path(dir.path(), 0, LOG_EXT);
    let mut bytes = fs::read(&path).expect("read");
    let at = bytes.len() - 5;
    bytes[at] ^= 0xff;
    fs::write(&path, &bytes).expect("write");
    let err = PartitionLog::open(dir.path(), small(300)).expect_err("corrupt old segment");
    match &err {
        LogError::Corrupt {
            path: bad,
            position,
            ..
        } => {
            assert_eq!(bad, &path);
            assert!(
                *position > 0 && *position < bytes.len() as u64,
                "{position}"
            );
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    assert!(
        err.to_string().contains("00000000000000000000.log"),
        "{err}"
    );
}

#[test]
fn bad_index_files_are_rebuilt_after_a_clean_shutdown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let indexes = {
        let log = open(dir.path(), small(1 << 20));
        append_n(&log, 12, 0);
        log.close(0).expect("close");
        log.segments_for_test()[0].index_entries()
    };
    fs::write(segment_path(dir.path(), 0, INDEX_EXT), [1, 2, 3]).expect("garble index");
    fs::remove_file(segment_path(dir.path(), 0, TIME_INDEX_EXT)).expect("rm timeindex");
    let log = open(dir.path(), small(1 << 20));
    assert_eq!(log.segments_for_test()[0].index_entries(), indexes);
    assert_eq!(
        log.read(7, 1)
            .map(|r| offsets_of(&r.records))
            .expect("read"),
        vec![(7, 1)]
    );
}

#[test]
fn retention_by_bytes_keeps_the_newest_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(
        dir.path(),
        LogConfig {
            retention_bytes: Some(700),
            ..small(300)
        },
    );
    append_n(&log, 30, 0);
    let before = log.segment_count();
    let total = log.size_bytes();
    let outcome = log.enforce_retention(0).expect("retention");
    assert!(outcome.deleted_segments > 0);
    assert_eq!(log.segment_count(), before - outcome.deleted_segments);
    assert_eq!(log.size_bytes(), total - outcome.deleted_bytes);
    assert!(log.size_bytes() >= 700, "never below the limit");
    let oldest_left = log.segments_for_test()[0].summary().size;
    assert!(log.size_bytes() - oldest_left < 700, "deleted all it could");
    assert_eq!(outcome.log_start_offset, log.log_start_offset());
    assert_eq!(
        log.log_start_offset(),
        log.segments_for_test()[0].base_offset()
    );
    assert!(!segment_path(dir.path(), 0, LOG_EXT).exists());
    assert!(!segment_path(dir.path(), 0, INDEX_EXT).exists());
    let err = log.read(0, 100).expect_err("deleted");
    assert!(matches!(err, LogError::OffsetOutOfRange { .. }), "{err}");
    let start = log.log_start_offset();
    assert_eq!(
        read_all(&log, start, 1 << 20),
        (start..30).collect::<Vec<_>>()
    );
    drop(log);
    let log = open(dir.path(), small(300));
    assert_eq!(log.log_start_offset(), start, "reopen keeps the new start");
}

#[test]
fn retention_by_time_uses_the_injected_clock_and_spares_the_active_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(
        dir.path(),
        LogConfig {
            retention_ms: Some(1_000),
            ..small(300)
        },
    );
    // Timestamps 10_000 + 100 * i.
    for i in 0..20 {
        log.append(&batch(10_000 + 100 * i, &[b"value"]), EPOCH, 0)
            .expect("append");
    }
    let segments = log.segments_for_test();
    assert!(segments.len() > 3);
    // The first segment's newest batch (10_300) is exactly 1 s old: kept.
    assert_eq!(
        log.enforce_retention(11_300)
            .expect("retention")
            .deleted_segments,
        0
    );
    // At 12_000 the segments whose newest batch is before 11_000 expire.
    let expired = segments
        .iter()
        .take_while(|s| s.summary().max_timestamp < 11_000)
        .count();
    let outcome = log.enforce_retention(12_000).expect("retention");
    assert_eq!(outcome.deleted_segments, expired);
    // Far in the future everything but the active segment goes.
    log.enforce_retention(1_000_000).expect("retention");
    assert_eq!(log.segment_count(), 1);
    let active = &log.segments_for_test()[0];
    assert_eq!(log.log_start_offset(), active.base_offset());
    assert_eq!(log.log_end_offset(), 20);
}

#[test]
fn segment_ms_rolls_by_the_injected_clock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(
        dir.path(),
        LogConfig {
            segment_ms: 1_000,
            ..small(1 << 20)
        },
    );
    log.append(&batch(0, &[b"a"]), EPOCH, 5_000)
        .expect("append");
    log.append(&batch(0, &[b"b"]), EPOCH, 5_999)
        .expect("append");
    assert_eq!(log.segment_count(), 1);
    log.append(&batch(0, &[b"c"]), EPOCH, 6_000)
        .expect("append");
    assert_eq!(log.segment_count(), 2);
    assert_eq!(log.segments_for_test()[1].base_offset(), 2);
}

#[test]
fn flush_policy_batches_fsyncs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(
        dir.path(),
        LogConfig {
            flush: FlushPolicy {
                every_messages: Some(3),
                every_ms: Some(1_000),
            },
            ..small(1 << 20)
        },
    );
    let flushed: Vec<bool> = (0..4)
        .map(|i| {
            log.append(&batch(0, &[b"x"]), EPOCH, i)
                .expect("append")
                .flushed
        })
        .collect();
    assert_eq!(flushed, vec![false, false, true, false]);
    assert!(!log.flush_if_due(500).expect("flush"));
    assert!(log.flush_if_due(1_002).expect("flush"));
    assert!(!log.flush_if_due(1_003).expect("nothing unflushed"));
    let info = log
        .append(&batch(0, &[b"y"]), EPOCH, 3_000)
        .expect("append");
    assert!(info.flushed, "flush.ms passed since the last fsync");
}

#[test]
fn concurrent_appends_get_contiguous_offsets_while_readers_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(open(dir.path(), small(2_000)));
    let threads = 4;
    let per_thread = 50;
    let writers: Vec<_> = (0..threads)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                (0..per_thread)
                    .map(|i| {
                        let value = format!("t{t}-{i}");
                        let info = log
                            .append(&batch(i, &[value.as_bytes(), b"second"]), EPOCH, 0)
                            .expect("append");
                        assert_eq!(info.last_offset, info.base_offset + 1);
                        info.base_offset
                    })
                    .collect::<Vec<i64>>()
            })
        })
        .collect();
    let reader = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            let total = threads * per_thread * 2;
            let mut next = 0;
            while next < total {
                let read = log.read(next, 4096).expect("read while appending");
                for (base, count) in offsets_of(&read.records) {
                    assert_eq!(base, next, "reads see whole batches in order");
                    next = base + i64::from(count);
                }
                std::thread::yield_now();
            }
        })
    };
    let mut bases: Vec<i64> = writers
        .into_iter()
        .flat_map(|w| w.join().expect("writer thread"))
        .collect();
    reader.join().expect("reader thread");
    bases.sort_unstable();
    let expected: Vec<i64> = (0..threads * per_thread).map(|i| 2 * i).collect();
    assert_eq!(bases, expected);
    assert_eq!(log.log_end_offset(), 2 * expected.len() as i64);
    assert!(log.segment_count() > 1);
}

#[test]
fn subscribe_sees_the_log_end_offset_move() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), small(1 << 20));
    let mut rx = log.subscribe();
    assert_eq!(*rx.borrow_and_update(), 0);
    log.append(&batch(0, &[b"a", b"b"]), EPOCH, 0)
        .expect("append");
    assert!(rx.has_changed().expect("sender alive"));
    assert_eq!(*rx.borrow_and_update(), 2);
}

#[test]
fn store_recovers_creates_and_deletes_partition_logs() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = LogStore::open(dir.path(), small(1 << 20)).expect("open store");
        for (topic, partition) in [("orders", 0), ("orders", 1), ("my-topic.v2", 0)] {
            let log = store
                .get_or_create(topic, partition, small(1 << 20))
                .expect("create");
            log.append(&batch(0, &[b"x"]), EPOCH, 0).expect("append");
        }
        assert!(
            dir.path()
                .join("logs/orders-1/00000000000000000000.log")
                .exists()
        );
        let err = LogStore::open(dir.path(), small(1 << 20)).expect_err("locked");
        assert!(matches!(err, LogError::Locked { .. }), "{err}");
        for bad in ["", "..", "a/b", "x y"] {
            let err = store
                .get_or_create(bad, 0, small(1))
                .expect_err("bad topic");
            assert!(matches!(err, LogError::InvalidTopic { .. }), "{err}");
        }
        let err = store
            .get_or_create("t", -1, small(1))
            .expect_err("bad partition");
        assert!(
            matches!(err, LogError::InvalidPartition { partition: -1 }),
            "{err}"
        );
        store.close(0).expect("close");
    }
    let store = LogStore::open(dir.path(), small(1 << 20)).expect("reopen store");
    let mut names: Vec<(String, i32)> = store.logs().into_iter().map(|(t, p, _)| (t, p)).collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            ("my-topic.v2".to_owned(), 0),
            ("orders".to_owned(), 0),
            ("orders".to_owned(), 1)
        ]
    );
    let held = store.get("orders", 1).expect("recovered");
    assert_eq!(held.log_end_offset(), 1);

    let mut deleted = store.delete_topic("orders").expect("delete topic");
    deleted.sort_unstable();
    assert_eq!(deleted, vec![0, 1]);
    assert!(store.get("orders", 0).is_none());
    assert!(!dir.path().join("logs/orders-0").exists());
    assert!(!dir.path().join("logs/orders-1.delete").exists());
    let err = held
        .append(&batch(0, &[b"x"]), EPOCH, 0)
        .expect_err("deleted");
    assert!(matches!(err, LogError::Closed { .. }), "{err}");
    assert!(store.get("my-topic.v2", 0).is_some());
    assert!(!store.delete_partition("orders", 0).expect("already gone"));
    // A recreated topic starts from offset 0.
    let log = store
        .get_or_create("orders", 0, small(1 << 20))
        .expect("recreate");
    assert_eq!(log.log_end_offset(), 0);
}

#[test]
fn a_damaged_partition_stays_offline_while_the_store_serves_the_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = LogStore::open(dir.path(), small(1 << 20)).expect("open store");
        for partition in [0, 1] {
            let log = store
                .get_or_create("t", partition, small(1 << 20))
                .expect("create");
            append_n(&log, 4, 0);
        }
        // Dropped without close: a crash.
    }
    let path = dir.path().join("logs/t-0/00000000000000000000.log");
    let mut bytes = fs::read(&path).expect("read");
    bytes[70] ^= 0xff;
    fs::write(&path, &bytes).expect("write");
    let store = LogStore::open(dir.path(), small(1 << 20)).expect("the store opens");
    assert_eq!(store.get("t", 1).expect("served").log_end_offset(), 4);
    let offline = store.offline();
    assert_eq!(offline.len(), 1, "{offline:?}");
    assert_eq!((offline[0].0.as_str(), offline[0].1), ("t", 0));
    assert!(
        offline[0].2.contains("00000000000000000000.log"),
        "{offline:?}"
    );
    let err = store
        .get_or_create("t", 0, small(1 << 20))
        .expect_err("offline");
    assert!(matches!(err, LogError::Offline { .. }), "{err}");
    assert_eq!(fs::read(&path).expect("read"), bytes, "nothing was cut");
    // Deleting the topic removes the damaged partition too.
    let mut deleted = store.delete_topic("t").expect("delete");
    deleted.sort_unstable();
    assert_eq!(deleted, vec![0, 1]);
    assert!(store.offline().is_empty());
    assert!(!dir.path().join("logs/t-0").exists());
}

/// Every byte of the log from `from` on.
fn read_bytes(log: &PartitionLog, from: i64) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut next = from;
    loop {
        let read = log.read(next, 1 << 20).expect("read");
        if read.records.is_empty() {
            return bytes;
        }
        for b in Batches::new(&read.records) {
            next = b.expect("valid").header().next_offset();
        }
        bytes.extend_from_slice(&read.records);
    }
}

#[test]
fn a_follower_copies_the_leaders_batches_byte_for_byte() {
    let leader_dir = tempfile::tempdir().expect("tempdir");
    let follower_dir = tempfile::tempdir().expect("tempdir");
    let leader = open(leader_dir.path(), small(300));
    let follower = open(follower_dir.path(), small(300));
    for (i, epoch) in [(0, 1), (1, 1), (2, 2), (3, 2), (4, 5)] {
        let records = [batch(i, &[b"x", b"y"]), batch(i, &[b"z"])].concat();
        leader.append(&records, epoch, 0).expect("leader append");
        // The follower fetches from its log end offset, a few bytes at a time, as a replica
        // fetcher with a small fetch size would.
        loop {
            let read = leader
                .read(follower.log_end_offset(), 100)
                .expect("leader read");
            if read.records.is_empty() {
                break;
            }
            let info = follower
                .append_replicated(&read.records, 0)
                .expect("follower append");
            assert_eq!(info.base_offset, offsets_of(&read.records)[0].0);
        }
    }
    assert_eq!(follower.log_end_offset(), 15);
    assert!(follower.segment_count() > 1, "the copy rolled segments");
    assert_eq!(read_bytes(&follower, 0), read_bytes(&leader, 0));
    let epochs: Vec<i32> = Batches::new(&read_bytes(&follower, 0))
        .map(|b| b.expect("valid").header().partition_leader_epoch)
        .collect();
    assert_eq!(epochs, vec![1, 1, 1, 1, 2, 2, 2, 2, 5, 5]);

    follower.close(0).expect("close");
    drop(follower);
    let reopened = open(follower_dir.path(), small(300));
    assert_eq!(reopened.log_end_offset(), 15);
    assert_eq!(read_bytes(&reopened, 7), read_bytes(&leader, 7));
}

/// A replicated append keeps the leader's offsets: it may skip offsets (a compacted leader's
/// log has gaps) but never goes back over what the log or the append already holds.
#[test]
fn a_replicated_append_never_goes_back() {
    let leader_dir = tempfile::tempdir().expect("tempdir");
    let follower_dir = tempfile::tempdir().expect("tempdir");
    let leader = open(leader_dir.path(), small(1 << 20));
    append_n(&leader, 4, 0);
    let follower = open(follower_dir.path(), small(1 << 20));

    let first = leader.read(0, 1).expect("read").records;
    let third = leader.read(2, 1).expect("read").records;
    let err = follower
        .append_replicated(&[third.clone(), first.clone()].concat(), 0)
        .expect_err("backwards");
    assert!(
        matches!(
            err,
            LogError::NotContiguous {
                expected: 3,
                got: 0
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        follower.log_end_offset(),
        0,
        "a refused append writes nothing"
    );
    follower.append_replicated(&first, 0).expect("in order");
    assert_eq!(follower.log_end_offset(), 1);
    let err = follower.append_replicated(&first, 0).expect_err("again");
    assert!(
        matches!(
            err,
            LogError::NotContiguous {
                expected: 1,
                got: 0
            }
        ),
        "{err:?}"
    );
    // Past the log end offset: the gap stays a gap.
    follower.append_replicated(&third, 0).expect("with a gap");
    assert_eq!(follower.log_end_offset(), 3);
    assert_eq!(read_all(&follower, 0, 1 << 20), vec![0, 2]);
    drop(follower);
    let follower = open(follower_dir.path(), small(1 << 20));
    assert_eq!(follower.log_end_offset(), 3);
    assert_eq!(read_all(&follower, 1, 1 << 20), vec![2]);
}

#[test]
fn truncation_cuts_back_across_segments_and_the_log_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), small(200));
    append_n(&log, 20, 100);
    let segments = log.segment_count();
    assert!(segments > 4, "{segments} segments");

    assert_eq!(log.truncate_to(25, 0).expect("past the end"), 20);
    assert_eq!(log.truncate_to(11, 0).expect("truncate"), 11);
    assert_eq!(log.log_end_offset(), 11);
    assert_eq!(read_all(&log, 0, 1 << 20), (0..11).collect::<Vec<_>>());
    assert!(log.segment_count() < segments);
    let remaining: Vec<_> = fs::read_dir(dir.path())
        .expect("list")
        .filter_map(|e| {
            let name = e.expect("entry").file_name().to_string_lossy().into_owned();
            name.strip_suffix(&format!(".{LOG_EXT}"))
                .and_then(|stem| stem.parse::<i64>().ok())
        })
        .collect();
    assert!(
        remaining.iter().all(|&base| base <= 11),
        "segments past the cut are gone: {remaining:?}"
    );

    let info = log
        .append(&batch(500, &[b"new"]), EPOCH + 1, 0)
        .expect("append");
    assert_eq!(info.base_offset, 11);
    assert_eq!(read_all(&log, 5, 64), (5..12).collect::<Vec<_>>());

    drop(log);
    let reopened = open(dir.path(), small(200));
    assert_eq!(reopened.log_end_offset(), 12);
    assert_eq!(read_all(&reopened, 0, 1 << 20), (0..12).collect::<Vec<_>>());
}

#[test]
fn truncation_inside_a_batch_drops_the_whole_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), small(1 << 20));
    log.append(&batch(1, &[b"a", b"b", b"c"]), EPOCH, 0)
        .expect("append");
    log.append(&batch(2, &[b"d", b"e", b"f"]), EPOCH, 0)
        .expect("append");
    assert_eq!(log.truncate_to(4, 0).expect("truncate"), 3);
    assert_eq!(
        offsets_of(&log.read(0, 1 << 20).expect("read").records),
        vec![(0, 3)]
    );
}

#[test]
fn truncation_before_the_log_start_restarts_the_log_there() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        retention_bytes: Some(1),
        ..small(200)
    };
    let log = open(dir.path(), config.clone());
    append_n(&log, 12, 0);
    log.enforce_retention(0).expect("retention");
    let start = log.log_start_offset();
    assert!(start > 0);
    assert_eq!(log.truncate_to(start - 1, 0).expect("truncate"), start - 1);
    assert_eq!(
        (log.log_start_offset(), log.log_end_offset()),
        (start - 1, start - 1)
    );
    let info = log
        .append(&batch(9, &[b"again"]), EPOCH, 0)
        .expect("append");
    assert_eq!(info.base_offset, start - 1);
    drop(log);
    let reopened = open(dir.path(), config);
    assert_eq!(reopened.log_end_offset(), start);
}

#[test]
fn leader_epochs_are_tracked_stored_copied_and_cut() {
    let leader_dir = tempfile::tempdir().expect("tempdir");
    let follower_dir = tempfile::tempdir().expect("tempdir");
    let leader = open(leader_dir.path(), small(300));
    for (ts, epoch) in [(0, 1), (1, 1), (2, 2), (3, 2), (4, 5)] {
        leader
            .append(&batch(ts, &[b"a", b"b"]), epoch, 0)
            .expect("append");
    }
    let expected = |entries: &[(i32, i64)]| -> Vec<EpochStart> {
        entries
            .iter()
            .map(|&(epoch, start_offset)| EpochStart {
                epoch,
                start_offset,
            })
            .collect()
    };
    assert_eq!(leader.leader_epochs(), expected(&[(1, 0), (2, 4), (5, 8)]));
    assert_eq!(leader.end_offset_for_epoch(0), None);
    assert_eq!(leader.end_offset_for_epoch(1), Some((1, 4)));
    assert_eq!(leader.end_offset_for_epoch(3), Some((2, 8)));
    assert_eq!(leader.end_offset_for_epoch(5), Some((5, 10)));

    // A follower's copy has the same epochs.
    let follower = open(follower_dir.path(), small(300));
    let records = read_bytes(&leader, 0);
    follower.append_replicated(&records, 0).expect("copy");
    assert_eq!(follower.leader_epochs(), leader.leader_epochs());

    // Reopened from the stored cache, and rebuilt from the batches when it is gone.
    drop(leader);
    let reopened = open(leader_dir.path(), small(300));
    assert_eq!(
        reopened.leader_epochs(),
        expected(&[(1, 0), (2, 4), (5, 8)])
    );
    drop(reopened);
    fs::remove_file(leader_dir.path().join("leader-epochs")).expect("remove the cache");
    let rebuilt = open(leader_dir.path(), small(300));
    assert_eq!(rebuilt.leader_epochs(), expected(&[(1, 0), (2, 4), (5, 8)]));

    // Cutting the log drops the epochs that started past the cut, durably.
    assert_eq!(follower.truncate_to(6, 0).expect("truncate"), 6);
    assert_eq!(follower.leader_epochs(), expected(&[(1, 0), (2, 4)]));
    assert_eq!(follower.end_offset_for_epoch(5), Some((2, 6)));
    follower
        .append(&batch(9, &[b"c"]), 7, 0)
        .expect("append as the new leader");
    drop(follower);
    let reopened = open(follower_dir.path(), small(300));
    assert_eq!(
        reopened.leader_epochs(),
        expected(&[(1, 0), (2, 4), (7, 6)])
    );
}

#[test]
fn advancing_the_start_hides_records_deletes_whole_segments_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), small(300));
    append_n(&log, 30, 1_000);
    let segments = log.segment_count();
    let bases: Vec<i64> = log
        .segments_for_test()
        .iter()
        .map(|s| s.base_offset())
        .collect();
    // Inside the third segment, past its base.
    let target = bases[2] + 1;
    assert_eq!(log.advance_start(target).expect("advance"), target);
    assert_eq!(log.log_start_offset(), target);
    assert_eq!(
        log.segment_count(),
        segments - 2,
        "whole segments below it go"
    );
    assert!(!segment_path(dir.path(), 0, LOG_EXT).exists());
    assert_eq!(log.segments_for_test()[0].base_offset(), bases[2]);
    let err = log.read(target - 1, 100).expect_err("below the start");
    assert!(
        matches!(err, LogError::OffsetOutOfRange { log_start_offset, .. } if log_start_offset == target),
        "{err}"
    );
    assert_eq!(
        read_all(&log, target, 1 << 20),
        (target..30).collect::<Vec<_>>()
    );
    let found = log.offset_for_timestamp(0).expect("lookup").expect("found");
    assert_eq!(
        found.offset, target,
        "timestamp lookups do not go below the start"
    );

    assert_eq!(
        log.advance_start(3).expect("behind"),
        target,
        "never backwards"
    );
    let err = log.advance_start(31).expect_err("past the end");
    assert!(matches!(err, LogError::OffsetOutOfRange { .. }), "{err}");
    log.enforce_retention(0).expect("retention");
    assert_eq!(
        log.log_start_offset(),
        target,
        "retention keeps a later start"
    );

    drop(log);
    let log = open(dir.path(), small(300));
    assert_eq!(log.log_start_offset(), target, "reopen keeps the start");
    assert_eq!(log.log_end_offset(), 30);
    // Up to the end: the log is empty to readers and appends go on from there.
    assert_eq!(log.advance_start(30).expect("to the end"), 30);
    assert!(log.read(30, 100).expect("at the end").records.is_empty());
    assert_eq!(
        log.append(&batch(9, &[b"next"]), EPOCH, 0)
            .expect("append")
            .base_offset,
        30
    );
    assert_eq!(read_all(&log, 30, 1 << 20), vec![30]);
}

#[test]
fn truncating_below_a_moved_start_lowers_it_for_good() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), small(1 << 20));
    append_n(&log, 10, 0);
    log.advance_start(8).expect("advance");
    assert_eq!(log.truncate_to(5, 0).expect("truncate"), 5);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (5, 5));
    append_n(&log, 10, 0);
    drop(log);
    let log = open(dir.path(), small(1 << 20));
    assert_eq!(
        (log.log_start_offset(), log.log_end_offset()),
        (5, 15),
        "the checkpoint followed the cut, so the reopened log starts where it did"
    );
}

#[test]
fn max_timestamp_finds_the_first_batch_holding_the_largest_timestamp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), small(200));
    assert_eq!(log.max_timestamp(), None, "an empty log has none");
    // Out of order across segments: the largest is in the middle, and comes twice.
    for ts in [10, 50, 90, 20, 90, 30, 40] {
        log.append(&batch(ts, &[b"v"]), EPOCH, 0).expect("append");
    }
    assert!(log.segment_count() > 1);
    assert_eq!(
        log.max_timestamp(),
        Some(TimestampOffset {
            offset: 2,
            timestamp: 90
        })
    );
    // Never below the log start offset.
    log.advance_start(3).expect("advance");
    assert!(log.max_timestamp().is_some_and(|t| t.offset >= 3));
}

/// Slices (and the reads made of them) hold exactly the whole batches from the one holding
/// the offset, as many as fit in max bytes (at least one) that start below the end offset,
/// across segments, for small batches and for batches larger than the header-walking window;
/// and a slice still reads its bytes after retention deleted its segment.
#[test]
fn slices_hold_whole_batches_and_outlive_their_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(
        dir.path(),
        LogConfig {
            retention_bytes: Some(1),
            ..small(12_000)
        },
    );
    // (base offset, record count, bytes) of every batch, in order.
    let mut batches = Vec::new();
    for i in 0..40usize {
        let value = vec![b'v'; if i % 7 == 3 { 5_000 } else { 20 + i }];
        let bytes = batch(i as i64, &[&value, b"x"]);
        let info = log.append(&bytes, EPOCH, 0).expect("append");
        batches.push((info.base_offset, 2i64, bytes.len()));
    }
    assert!(log.segment_count() > 2, "spans segments");
    let log_end = log.log_end_offset();
    for from in [0, 1, 5, 6, 7, 31, 48, 79] {
        for max_bytes in [1, 100, 700, 5_100, 12_000, 1 << 20] {
            for end in [from + 1, from + 9, 64, log_end] {
                let first = batches
                    .iter()
                    .position(|(base, count, _)| base + count > from)
                    .expect("batch");
                let mut expected = Vec::new();
                let mut taken = 0;
                for &(base, _, len) in &batches[first..] {
                    if base >= end || (!expected.is_empty() && taken + len > max_bytes) {
                        break;
                    }
                    taken += len;
                    expected.push(base);
                }
                let slices = log.slices_until(from, max_bytes, end).expect("slices");
                let mut bytes = Vec::new();
                for slice in &slices.slices {
                    slice.read_into(&mut bytes).expect("read slice");
                }
                let bases: Vec<i64> = offsets_of(&bytes).iter().map(|(base, _)| *base).collect();
                assert_eq!(bases, expected, "from {from}, max {max_bytes}, end {end}");
                assert_eq!(slices.len(), bytes.len() as u64);
                assert_eq!(
                    log.read_until(from, max_bytes, end).expect("read").records,
                    bytes
                );
            }
        }
    }
    let slices = log.slices_until(0, 1 << 20, log_end).expect("slices");
    let mut before = Vec::new();
    for slice in &slices.slices {
        slice.read_into(&mut before).expect("read slice");
    }
    let outcome = log.enforce_retention(0).expect("retention");
    assert!(outcome.deleted_segments > 0);
    assert!(!segment_path(dir.path(), 0, LOG_EXT).exists());
    let mut after = Vec::new();
    for slice in &slices.slices {
        slice
            .read_into(&mut after)
            .expect("read a deleted segment's slice");
    }
    assert_eq!(after, before);
}
