//! Behaviour of the public API: streams, JSON Lines, literals, overlaps, counts, configuration.

use std::io::{BufReader, Cursor};

use runcap_redact::{Config, Counts, Redactor, Rule, Stats};
use serde_json::Value;

fn text_stream(r: &Redactor, input: &[u8], buf_cap: usize) -> (Vec<u8>, Counts, Stats) {
    let mut out = Vec::new();
    let mut counts = Counts::new();
    let reader = BufReader::with_capacity(buf_cap, Cursor::new(input));
    let stats = r.redact_text_stream(reader, &mut out, &mut counts).unwrap();
    (out, counts, stats)
}

fn jsonl_stream(r: &Redactor, input: &[u8], buf_cap: usize) -> (Vec<u8>, Counts, Stats) {
    let mut out = Vec::new();
    let mut counts = Counts::new();
    let reader = BufReader::with_capacity(buf_cap, Cursor::new(input));
    let stats = r
        .redact_jsonl_stream(reader, &mut out, &mut counts)
        .unwrap();
    (out, counts, stats)
}

/// Small deterministic generator so the tests need no extra crates.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

const PLANTS: &[(&str, &str)] = &[
    ("email", "maria.garcia@example.com"),
    ("ssn", "123-45-6789"),
    ("credit_card", "4111 1111 1111 1111"),
    ("credit_card", "5555555555554444"),
    ("phone", "+14155552671"),
    ("phone", "(415) 555-2671"),
    ("api_key", "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1w"),
    ("api_key", "AKIAIOSFODNN7EXAMPLE"),
    ("api_key", "ghp_1234567890abcdefghijABCDEFGHIJ123456"),
];

const FILLER: &[&str] = &[
    "GET /api/v1/orders/8812 200 15ms",
    "cache miss for key=user:42:profile",
    "retrying upstream in 250ms (attempt 2/5)",
    "version 1.2.3 build 9fceb02d0ae598e95dc970b74767f19372d61af8",
    "processed 4532015112830367 records",
    "é ü 中文 ✓ unicode filler",
];

/// A log with plants at known places, and the count of plants.
fn planted_log(lines: usize, seed: u64) -> (String, usize) {
    let mut rng = Rng(seed);
    let mut s = String::new();
    let mut planted = 0;
    for i in 0..lines {
        s.push_str(&format!(
            "2024-05-01T12:{:02}:{:02}Z INFO ",
            i % 60,
            (i * 7) % 60
        ));
        s.push_str(rng.pick(FILLER));
        if rng.next().is_multiple_of(4) {
            let (_, v) = PLANTS[(rng.next() % PLANTS.len() as u64) as usize];
            s.push_str(" value ");
            s.push_str(v);
            s.push_str(" end");
            planted += 1;
        }
        s.push('\n');
    }
    (s, planted)
}

#[test]
fn text_stream_redacts_counts_and_keeps_lines() {
    let r = Redactor::default();
    let (log, planted) = planted_log(2000, 7);
    let (out, counts, stats) = text_stream(&r, log.as_bytes(), 8192);
    let out = String::from_utf8(out).unwrap();
    for (_, v) in PLANTS {
        assert!(!out.contains(v), "{v} survived");
    }
    assert_eq!(out.lines().count(), 2000);
    assert_eq!(counts.total() as usize, planted);
    assert_eq!(stats.redactions as usize, planted);
    assert_eq!(stats.lines, 2000);
    assert_eq!(stats.bytes_in as usize, log.len());
    assert_eq!(stats.bytes_out as usize, out.len());
    assert!(stats.lines_redacted as usize <= planted && stats.lines_redacted > 0);
    // Lines without plants are byte-identical.
    for (a, b) in log.lines().zip(out.lines()) {
        if !a.contains(" value ") {
            assert_eq!(a, b);
        }
    }
}

#[test]
fn stream_output_does_not_depend_on_buffer_size() {
    let r = Redactor::default();
    let (log, _) = planted_log(300, 99);
    let mut log = log.replace("\n", "\r\n");
    log.push_str("last line without newline mail bob@example.com");
    let (reference, ref_counts, _) = text_stream(&r, log.as_bytes(), 1 << 16);
    for cap in [1, 2, 7, 64, 333] {
        let (out, counts, stats) = text_stream(&r, log.as_bytes(), cap);
        assert_eq!(out, reference, "buffer {cap}");
        assert_eq!(counts, ref_counts);
        assert_eq!(stats.lines, 301);
    }
    let text = String::from_utf8(reference).unwrap();
    assert!(text.ends_with("mail [EMAIL_REDACTED]"));
    assert_eq!(text.matches("\r\n").count(), 300, "CRLF endings kept");
}

#[test]
fn long_lines_are_processed_in_pieces() {
    let r = Redactor::default().with_max_line(1024);
    // 200 KiB in one line, with an email every ~100 bytes.
    let mut line = String::new();
    let mut n = 0;
    while line.len() < 200 * 1024 {
        line.push_str(&format!(
            "word{n} user{n}@example.com filler text here and there; "
        ));
        n += 1;
    }
    let input = format!("short bob@example.com\n{line}\nafter 123-45-6789\n");
    let (out, counts, stats) = text_stream(&r, input.as_bytes(), 4096);
    let out = String::from_utf8(out).unwrap();
    assert_eq!(stats.oversized_lines, 1);
    assert_eq!(stats.lines, 3);
    assert_eq!(stats.lines_redacted, 3);
    assert_eq!(out.lines().count(), 3);
    assert!(!out.contains("@example.com"), "every email redacted");
    assert_eq!(counts.get("email") as usize, n + 1);
    assert_eq!(counts.get("ssn"), 1);

    // A whitespace-free over-long line with multi-byte characters stays valid UTF-8.
    let blob = "é".repeat(40_000);
    let input = format!("{blob}\n");
    let (out, _, stats) = text_stream(&r, input.as_bytes(), 100);
    assert_eq!(stats.oversized_lines, 1);
    assert_eq!(String::from_utf8(out).unwrap(), input);
}

#[test]
fn non_utf8_text_passes_through() {
    let r = Redactor::default();
    let input = b"bin \xff\xfe bob@example.com \xc3\n".to_vec();
    let (out, counts, _) = text_stream(&r, &input, 64);
    assert_eq!(out, b"bin \xff\xfe [EMAIL_REDACTED] \xc3\n");
    assert_eq!(counts.get("email"), 1);
}

/// Same JSON structure: same types, keys and array lengths; strings equal or redacted.
fn same_shape(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y.iter())
                    .all(|((ka, va), (kb, vb))| ka == kb && same_shape(va, vb))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_shape(p, q))
        }
        (Value::String(x), Value::String(y)) => x == y || y.contains("_REDACTED]"),
        _ => a == b,
    }
}

#[test]
fn jsonl_output_is_valid_and_same_shape() {
    let r = Redactor::default();
    let mut rng = Rng(3);
    let mut input = String::new();
    let mut records = 0;
    for i in 0..500 {
        let (_, plant) = PLANTS[(rng.next() % PLANTS.len() as u64) as usize];
        let filler = rng.pick(FILLER);
        let rec = serde_json::json!({
            "ts": format!("2024-05-01T00:00:{:02}Z", i % 60),
            "level": "info",
            "msg": format!("{filler} {plant}"),
            "n": i,
            "f": 1.5,
            "nested": {"list": [plant, "plain", null, true, {"deep": format!("x {plant} y")}]},
            "password": "pw-value-1",
            "quote": "say \"hi\"\n\ttab \\ backslash",
        });
        input.push_str(&serde_json::to_string(&rec).unwrap());
        input.push('\n');
        records += 1;
    }
    let (out, counts, stats) = jsonl_stream(&r, input.as_bytes(), 512);
    let out = String::from_utf8(out).unwrap();
    assert_eq!(stats.invalid_json_lines, 0);
    assert_eq!(out.lines().count(), records);
    for (a, b) in input.lines().zip(out.lines()) {
        let va: Value = serde_json::from_str(a).unwrap();
        let vb: Value = serde_json::from_str(b).expect("output line is JSON");
        assert!(same_shape(&va, &vb), "{a}\n{b}");
        assert_eq!(vb["password"], "[API_KEY_REDACTED]");
        assert_eq!(vb["quote"], va["quote"]);
        assert_eq!(vb["ts"], va["ts"]);
    }
    for (_, v) in PLANTS {
        assert!(!out.contains(v), "{v} survived");
    }
    assert!(counts.get("api_key") as usize >= records);
    assert_eq!(counts.total(), stats.redactions);
}

#[test]
fn jsonl_key_order_and_spacing_are_kept() {
    let r = Redactor::default();
    let input = "{\"z\": 1,   \"a\" : \"bob@example.com\", \"n\": 1.0e3}\n";
    let (out, _, _) = jsonl_stream(&r, input.as_bytes(), 64);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "{\"z\": 1,   \"a\" : \"[EMAIL_REDACTED]\", \"n\": 1.0e3}\n"
    );
}

#[test]
fn invalid_json_lines_fall_back_to_text() {
    let r = Redactor::default();
    let input =
        "{\"ok\": \"a@example.com\"}\nnot json a@example.com\n\n{\"broken\": \"b@example.com\"\n";
    let (out, counts, stats) = jsonl_stream(&r, input.as_bytes(), 16);
    assert_eq!(stats.invalid_json_lines, 2);
    assert_eq!(stats.lines, 4);
    assert_eq!(counts.get("email"), 3);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "{\"ok\": \"[EMAIL_REDACTED]\"}\nnot json [EMAIL_REDACTED]\n\n{\"broken\": \"[EMAIL_REDACTED]\"\n"
    );
}

#[test]
fn literals_are_redacted_everywhere() {
    let r = Redactor::default()
        .with_literals([("db_password", "Tr0ub4dor&3"), ("webhook", "whsec_9f8e7d")])
        .unwrap();
    assert_eq!(r.literal_names(), ["db_password", "webhook"]);
    let mut counts = Counts::new();
    let out = r.redact_str_counted("connect pw Tr0ub4dor&3 hook=whsec_9f8e7d abc", &mut counts);
    assert_eq!(
        out,
        "connect pw [SECRET_REDACTED] hook=[SECRET_REDACTED] abc"
    );
    // A value too short to redact is refused with a typed error that names it, not skipped.
    let err = Redactor::default()
        .with_literals([("pin", "abc")])
        .unwrap_err();
    assert!(
        matches!(&err, runcap_redact::Error::LiteralTooShort { name, len: 3, min } if name == "pin" && *min == runcap_redact::MIN_LITERAL_LEN),
        "{err}"
    );
    assert_eq!(counts.get("secret"), 2);

    let mut v = serde_json::json!({"note": "uses Tr0ub4dor&3", "list": ["whsec_9f8e7d"]});
    let mut counts = Counts::new();
    assert_eq!(r.redact_json_value(&mut v, &mut counts), 2);
    assert_eq!(v["note"], "uses [SECRET_REDACTED]");
    assert!(
        !format!("{r:?}").contains("Tr0ub4dor"),
        "Debug never shows values"
    );

    // Inside a longer token a literal still wins over the generic key=value rule's value.
    let out = r.redact_str("token=Tr0ub4dor&3");
    assert!(!out.contains("Tr0ub4dor"), "{out}");
}

#[test]
fn overlaps_resolve_deterministically() {
    let custom = Rule::custom("order", "ORDER-[0-9]+", "[ORDER]").unwrap();
    let r = Redactor::new(
        runcap_redact::Builtin::DEFAULT
            .map(Rule::builtin)
            .into_iter()
            .chain([custom]),
    )
    .unwrap();
    // Custom match starts first and covers the card number inside it.
    assert_eq!(
        r.redact_str("id ORDER-4111111111111111 ok"),
        "id [ORDER] ok"
    );
    // Email and phone start together; the longer (email) wins.
    assert_eq!(
        r.redact_str("sms +14155552671@sms.example.com"),
        "sms [EMAIL_REDACTED]"
    );
    // Nested phone forms collapse to one replacement.
    assert_eq!(r.redact_str("+1 (415) 555-2671"), "[PHONE_REDACTED]");
    let m = r.find_matches(b"+1 (415) 555-2671 and bob@example.com");
    assert_eq!(m.len(), 2);
    assert_eq!((m[0].rule, m[0].range.clone()), ("phone", 0..17));
    assert_eq!((m[1].rule, m[1].range.clone()), ("email", 22..37));
}

#[test]
fn overlapping_custom_rules_leave_no_partial_original() {
    let a = Rule::custom("a", "SECRET-[A-Z]+", "[A]").unwrap();
    let b = Rule::custom("b", "[A-Z]+-TAIL", "[B]").unwrap();
    let r = Redactor::new([a, b]).unwrap();
    // `a` starts first; `b` overlaps and extends further, so `a`'s replacement covers both.
    assert_eq!(r.redact_str("x SECRET-ABC-TAIL y"), "x [A] y");
    let mut counts = Counts::new();
    let _ = r.redact_str_counted("x SECRET-ABC-TAIL y", &mut counts);
    assert_eq!(counts.get("a"), 1);
    assert_eq!(counts.get("b"), 0);
}

#[test]
fn str_api_borrows_when_clean() {
    let r = Redactor::default();
    assert!(matches!(
        r.redact_str("nothing to see, 1.2.3"),
        std::borrow::Cow::Borrowed(_)
    ));
    let mut counts = Counts::new();
    let out = r.redact_bytes(b"call 415-555-2671", &mut counts);
    assert_eq!(&*out, b"call [PHONE_REDACTED]");
    assert_eq!(counts.get("phone"), 1);
}

#[test]
fn config_from_toml() {
    let cfg: Config = toml::from_str(
        r#"
        rules = ["email", "api_key"]
        include_ip = true

        [[custom]]
        name = "employee_id"
        pattern = "EMP-[0-9]{6}"
        replacement = "[EMPLOYEE_ID]"

        [[custom]]
        name = "ticket"
        pattern = "TCK-[0-9]+"
        "#,
    )
    .unwrap();
    let r = cfg.build().unwrap();
    let names: Vec<_> = r.rules().iter().map(Rule::name).collect();
    assert_eq!(
        names,
        ["email", "api_key", "ipv4", "ipv6", "employee_id", "ticket"]
    );
    assert_eq!(
        r.redact_str("EMP-123456 TCK-9 from 10.1.2.3 ssn 123-45-6789"),
        "[EMPLOYEE_ID] [TICKET_REDACTED] from [IPV4_REDACTED] ssn 123-45-6789"
    );

    let err = toml::from_str::<Config>("rulez = []")
        .unwrap_err()
        .to_string();
    assert!(err.contains("rulez"), "{err}");
    let cfg: Config = toml::from_str(
        r#"
        [[custom]]
        name = "bad"
        pattern = "(unclosed"
        "#,
    )
    .unwrap();
    let err = cfg.build().unwrap_err().to_string();
    assert!(err.contains("custom rule `bad`"), "{err}");
}

#[test]
fn random_text_never_panics_and_stays_utf8() {
    const PARTS: &[&str] = &[
        "0",
        "1",
        "4",
        "9",
        "12",
        "415",
        "4111",
        " ",
        "-",
        ".",
        "(",
        ")",
        "+",
        "@",
        ":",
        "::",
        "=",
        "\"",
        "'",
        "_",
        "a",
        "Z",
        "x.com",
        "é",
        "中",
        "token",
        "Bearer ",
        "sk-",
        "AKIA",
        "eyJ",
        "ghp_",
        "password",
        "\\\"",
        "[",
        "]",
        "{",
        "}",
        "Tr0ub4dor",
    ];
    let all = Config {
        rules: Some(
            runcap_redact::Builtin::ALL
                .iter()
                .map(|b| b.name().to_owned())
                .collect(),
        ),
        custom: vec![runcap_redact::CustomRule {
            name: "word".into(),
            pattern: "[a-z]+\\.[a-z]+".into(),
            replacement: None,
        }],
        ..Config::default()
    }
    .build()
    .unwrap()
    .with_literals([("pw", "Tr0ub4dor")])
    .unwrap();
    let mut rng = Rng(0xDEAD_BEEF_CAFE_F00D);
    for _ in 0..20_000 {
        let n = 1 + rng.next() % 24;
        let text: String = (0..n).map(|_| rng.pick(PARTS)).collect();
        let out = all.redact_str(&text);
        assert!(!out.contains("Tr0ub4dor"), "{text} -> {out}");
        let matches = all.find_matches(text.as_bytes());
        for w in matches.windows(2) {
            assert!(
                w[0].range.end <= w[1].range.start,
                "{text}: overlapping output spans"
            );
        }
        let mut counts = Counts::new();
        let _ = all.redact_bytes(text.as_bytes(), &mut counts);
    }
}

#[test]
fn redactor_is_shareable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Redactor>();
}
