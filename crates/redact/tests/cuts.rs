//! Over-long lines are processed in windows; no value may survive because it straddles the
//! point where one window's output ends and the next begins, nor a buffer fill, at the default
//! line cap and at the 64 KiB cap of supervised-service logs. Also: private keys and secrets of
//! several lines in line streams, and memory that stays bounded on a line with no end.

use std::io::{self, BufReader, Cursor, Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use runcap_redact::{Counts, DEFAULT_MAX_LINE, Redactor};

const SECRET: &str = "Tr0ub4dor&3-horse-battery";

/// Each value with the part of it that must not survive (a rule may keep a label readable).
const VALUES: &[(&str, &str, &str)] = &[
    (
        "email",
        "maria.garcia@example.com",
        "maria.garcia@example.com",
    ),
    ("ssn", "123-45-6789", "123-45-6789"),
    ("credit_card", "4111 1111 1111 1111", "4111 1111 1111 1111"),
    ("credit_card", "5555555555554444", "5555555555554444"),
    ("phone", "+1 (415) 555-2671", "415) 555-2671"),
    ("api_key", "AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    ("api_key", "Bearer abc123DEF456ghi789", "abc123DEF456ghi789"),
    (
        "api_key",
        "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1w",
        "Ab3dEf6hIj9kLm2nOp5qRs8tUv1w",
    ),
    (
        "api_key",
        "ghp_1234567890abcdefghijABCDEFGHIJ123456",
        "1234567890abcdefghijABCDEFGHIJ123456",
    ),
    (
        "api_key",
        "xoxb-263594206564-2343594206574-FGqddMF8t08v8N7Oq4i57vs1",
        "263594206564-2343594206574-FGqddMF8t08v8N7Oq4i57vs1",
    ),
    (
        "api_key",
        "postgres://app:s3cr3t-P4ss@db.internal:5432/prod",
        "s3cr3t-P4ss",
    ),
    (
        "api_key",
        "Authorization: Basic dXNlcjpwYXNzd29yZA==",
        "dXNlcjpwYXNzd29yZA",
    ),
    ("api_key", "password=hunter2hunter2", "hunter2hunter2"),
    (
        "api_key",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
        "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
    ),
    (
        "private_key",
        "-----BEGIN EC PRIVATE KEY-----\\nMHcCAQEEIIrYSSNQFaA2Hwf1duRSxKtLYX5CB04fSeQ6tF1aY/PuoAoGCCqGSM49\\n-----END EC PRIVATE KEY-----",
        "MHcCAQEEIIrYSSNQFaA2Hwf1duRSxKtLYX5CB04fSeQ6tF1aY",
    ),
    ("secret", SECRET, SECRET),
];

/// Words with nothing to redact, as filler.
fn filler(len: usize) -> &'static str {
    static FILL: OnceLock<String> = OnceLock::new();
    let fill = FILL.get_or_init(|| {
        "the quick brown fox jumps over lazy dogs while logs roll on ".repeat(40_000)
    });
    &fill[..len]
}

fn redactor(max_line: usize) -> Redactor {
    Redactor::default()
        .with_literals([("db", SECRET)])
        .unwrap()
        .with_max_line(max_line)
}

fn stream(r: &Redactor, input: &[u8], buf: usize) -> (String, Counts) {
    let mut out = Vec::new();
    let mut counts = Counts::new();
    r.redact_text_stream(
        BufReader::with_capacity(buf, Cursor::new(input)),
        &mut out,
        &mut counts,
    )
    .unwrap();
    (String::from_utf8(out).unwrap(), counts)
}

/// Plants every value at every offset that puts it across `point` (and a few beyond), in a
/// line long enough to be cut, and checks the stream's output against the line with the value
/// redacted on its own. Values are spread over two threads.
fn straddle(r: &Redactor, point: usize, line_len: usize) {
    std::thread::scope(|scope| {
        for half in [0, 1] {
            scope.spawn(move || {
                for &(rule, value, secret) in VALUES.iter().skip(half).step_by(2) {
                    let redacted = r.redact_str(value);
                    for start in point.saturating_sub(value.len() + 2)..=point + 2 {
                        let before = filler(start - 1);
                        let after = filler(line_len - start - value.len() - 1);
                        let input = format!("head\n{before} {value} {after}\ntail {SECRET}\n");
                        let want = format!(
                            "head\n{before} {redacted} {after}\ntail [SECRET_REDACTED]\n"
                        );
                        let (out, counts) = stream(r, input.as_bytes(), 4096);
                        assert!(
                            !out.contains(secret),
                            "{rule} at {start} across {point} survived"
                        );
                        assert!(
                            out == want,
                            "{rule} at {start} across {point}: output differs from the value redacted alone"
                        );
                        assert_eq!(
                            counts.get(rule),
                            1 + u64::from(rule == "secret"),
                            "{rule} at {start}"
                        );
                    }
                }
            });
        }
    });
}

/// The first window of a line read in 4 KiB fills, starting right after "head\n": it is
/// written up to an overlap (16 KiB) before its end, the first fill that makes the line hold
/// more than the cap and the overlap.
fn first_commit(max_line: usize) -> (usize, usize) {
    const OVERLAP: usize = 16 * 1024;
    let head = 5;
    let mut have = 4096 - head;
    while have <= max_line + OVERLAP {
        have += 4096;
    }
    (have - OVERLAP, have)
}

#[test]
fn values_across_window_ends_at_the_service_log_cap() {
    let max = 64 * 1024;
    let r = redactor(max);
    let (commit, window_end) = first_commit(max);
    let line_len = max * 3;
    straddle(&r, commit, line_len);
    straddle(&r, window_end, line_len);
    // Around the next commit too (one cap further, give or take a fill).
    straddle(&r, commit + max, line_len);
}

#[test]
fn values_across_window_ends_at_the_default_cap() {
    let r = redactor(DEFAULT_MAX_LINE);
    let (commit, _) = first_commit(DEFAULT_MAX_LINE);
    straddle(&r, commit, DEFAULT_MAX_LINE + 64 * 1024);
}

#[test]
fn small_caps_and_tiny_reads_still_see_values_whole() {
    // The smallest cap, read a byte at a time: windows are small, the overlap is not.
    let r = redactor(64);
    let mut line = String::new();
    let mut planted = 0;
    for (i, &(_, value, _)) in VALUES.iter().cycle().take(200).enumerate() {
        line.push_str(filler(37 + i % 90));
        line.push(' ');
        line.push_str(value);
        line.push(' ');
        planted += 1;
    }
    let (out, counts) = stream(&r, format!("{line}\n").as_bytes(), 1);
    for &(_, _, secret) in VALUES {
        assert!(!out.contains(secret), "{secret}");
    }
    assert_eq!(out, format!("{}\n", r.redact_str(&line)));
    assert_eq!(counts.total(), planted);
}

#[test]
fn tokens_longer_than_the_overlap_are_redacted_to_their_end() {
    let r = redactor(64 * 1024);
    let (commit, _) = first_commit(64 * 1024);
    let body: String = (0..40_000)
        .map(|i| char::from(b"A1b2C3d4E5"[i % 10]))
        .collect();
    for offset in [commit - 300, commit - 8, commit + 5] {
        let line = format!(
            "{} Authorization: Bearer {body} {}",
            filler(offset),
            filler(100_000)
        );
        let (out, counts) = stream(&r, format!("{line}\nnext A1b2C3d4E5\n").as_bytes(), 4096);
        assert!(
            !out.contains(&body[..12]),
            "token start survived at {offset}"
        );
        assert!(
            !out.contains(&body[body.len() - 12..]),
            "token end survived at {offset}"
        );
        assert!(
            out.contains("Bearer [API_KEY_REDACTED] the quick"),
            "{offset}"
        );
        assert!(
            out.ends_with("\nnext A1b2C3d4E5\n"),
            "the next line is kept"
        );
        assert_eq!(counts.get("api_key"), 1);
    }
}

const PEM: &str = "-----BEGIN RSA PRIVATE KEY-----
MIIEowIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MhgHcTz6sE2I2yPB
aFDrBz9vFqU4yZtGZ3UK0ygQdzh2ZuHqKHNqLnWUMhUtkkTWn2Dxh6ZEB6SnpJxQ
-----END RSA PRIVATE KEY-----";

#[test]
fn private_key_blocks_are_redacted_line_by_line() {
    let r = Redactor::default();
    let input = format!("before\n{PEM}\r\nafter bob@example.com\n");
    let (out, counts) = stream(&r, input.as_bytes(), 16);
    assert_eq!(
        out,
        "before\n[PRIVATE_KEY_REDACTED]\n[PRIVATE_KEY_REDACTED]\n[PRIVATE_KEY_REDACTED]\n\
         [PRIVATE_KEY_REDACTED]\r\nafter [EMAIL_REDACTED]\n"
    );
    assert_eq!(counts.get("private_key"), 1);
    // The END line may carry more text; a key cut short does not swallow the log after it.
    let cut = "key: -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n\
               2024-05-01 INFO started\n-----END PRIVATE KEY----- done 123-45-6789\n";
    let (out, _) = stream(&r, cut.as_bytes(), 7);
    assert_eq!(
        out,
        "key: [PRIVATE_KEY_REDACTED]\n[PRIVATE_KEY_REDACTED]\n2024-05-01 INFO started\n\
         -----END PRIVATE KEY----- done [SSN_REDACTED]\n"
    );
    // A whole string holding the key is one replacement.
    assert_eq!(
        r.redact_str(&format!("k={PEM}\nnext")),
        "k=[PRIVATE_KEY_REDACTED]\nnext"
    );
}

#[test]
fn multi_line_secrets_are_redacted_in_line_streams() {
    let secret = "first-line-of-the-secret\n  second-line-of-it\nxy";
    let r = Redactor::default()
        .with_literals([("cert", secret)])
        .unwrap();
    let input = format!("value:\n{secret}\nend\n  first-line-of-the-secret again\n");
    let (out, counts) = stream(&r, input.as_bytes(), 8);
    assert_eq!(
        out,
        "value:\n[SECRET_REDACTED]\n  [SECRET_REDACTED]\nxy\nend\n  [SECRET_REDACTED] again\n"
    );
    assert_eq!(counts.get("secret"), 3);
    assert_eq!(
        r.redact_str(&format!("v={secret}!")),
        "v=[SECRET_REDACTED]!",
        "a whole string is matched whole"
    );
}

/// A reader of one endless-looking line that records how much it has handed out.
struct Endless {
    left: usize,
    served: Arc<AtomicUsize>,
}

impl Read for Endless {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.left).min(64 * 1024);
        buf[..n].copy_from_slice(filler(n).as_bytes());
        self.left -= n;
        self.served.fetch_add(n, Ordering::Relaxed);
        Ok(n)
    }
}

/// A writer that records, at each write, how far behind the reader the output is.
struct Lag {
    written: usize,
    served: Arc<AtomicUsize>,
    worst: usize,
}

impl Write for Lag {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written += buf.len();
        let behind = self.served.load(Ordering::Relaxed) - self.written;
        self.worst = self.worst.max(behind);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn memory_stays_bounded_on_a_line_without_end() {
    let max = 64 * 1024;
    let r = Redactor::default().with_max_line(max);
    let served = Arc::new(AtomicUsize::new(0));
    let reader = BufReader::with_capacity(
        64 * 1024,
        Endless {
            left: 16 << 20,
            served: served.clone(),
        },
    );
    let mut lag = Lag {
        written: 0,
        served,
        worst: 0,
    };
    let stats = r
        .redact_text_stream(reader, &mut lag, &mut Counts::new())
        .unwrap();
    assert_eq!(stats.bytes_out, 16 << 20);
    assert_eq!(stats.oversized_lines, 1);
    // Never more than a cap, the overlap, the context and one read behind.
    assert!(
        lag.worst <= max + 16 * 1024 + 1024 + 64 * 1024,
        "output lagged {} bytes behind",
        lag.worst
    );
}
