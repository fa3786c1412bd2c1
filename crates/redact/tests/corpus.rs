//! Precision and recall of every rule over the labelled corpus in `tests/corpus/`.
//!
//! Positives mark each expected replacement as `⟦rule:text⟧`; negatives carry no marks, so any
//! match on them is a false positive. A match counts as correct only when rule and byte range
//! are both exact.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use runcap_redact::{Builtin, Config, Redactor};

const OPEN: &str = "⟦";
const CLOSE: &str = "⟧";

struct Labelled {
    file: &'static str,
    line_no: usize,
    text: String,
    expected: Vec<(String, usize, usize)>,
}

fn parse(file: &'static str, content: &str) -> Vec<Labelled> {
    let mut out = Vec::new();
    for (i, raw) in content.lines().enumerate() {
        if raw.trim().is_empty() || raw.starts_with('#') {
            continue;
        }
        let mut text = String::new();
        let mut expected = Vec::new();
        let mut rest = raw;
        while let Some(open) = rest.find(OPEN) {
            text.push_str(&rest[..open]);
            let after = &rest[open + OPEN.len()..];
            let close = after
                .find(CLOSE)
                .unwrap_or_else(|| panic!("{file}:{}: unclosed marker", i + 1));
            let inner = &after[..close];
            let (rule, value) = inner
                .split_once(':')
                .unwrap_or_else(|| panic!("{file}:{}: marker without rule", i + 1));
            let start = text.len();
            text.push_str(value);
            expected.push((rule.to_owned(), start, text.len()));
            rest = &after[close + CLOSE.len()..];
        }
        text.push_str(rest);
        out.push(Labelled {
            file,
            line_no: i + 1,
            text,
            expected,
        });
    }
    out
}

fn corpus() -> Vec<Labelled> {
    let mut v = parse("positives.txt", include_str!("corpus/positives.txt"));
    v.extend(parse("negatives.txt", include_str!("corpus/negatives.txt")));
    v
}

fn all_rules() -> Redactor {
    Config {
        rules: Some(Builtin::ALL.iter().map(|b| b.name().to_owned()).collect()),
        ..Config::default()
    }
    .build()
    .unwrap()
}

#[derive(Default)]
struct Score {
    tp: u64,
    fp: u64,
    fn_: u64,
}

#[test]
fn precision_and_recall_are_perfect() {
    let redactor = all_rules();
    let mut scores: BTreeMap<String, Score> = Builtin::ALL
        .iter()
        .map(|b| (b.name().to_owned(), Score::default()))
        .collect();
    let mut problems = Vec::new();
    for item in corpus() {
        let expected: BTreeSet<(String, usize, usize)> = item.expected.iter().cloned().collect();
        let got: BTreeSet<(String, usize, usize)> = redactor
            .find_matches(item.text.as_bytes())
            .into_iter()
            .map(|m| (m.rule.to_owned(), m.range.start, m.range.end))
            .collect();
        for g in &got {
            let s = scores.entry(g.0.clone()).or_default();
            if expected.contains(g) {
                s.tp += 1;
            } else {
                s.fp += 1;
                problems.push(format!(
                    "{}:{}: false positive {} `{}` in: {}",
                    item.file,
                    item.line_no,
                    g.0,
                    &item.text[g.1..g.2],
                    item.text
                ));
            }
        }
        for e in expected.difference(&got) {
            scores.entry(e.0.clone()).or_default().fn_ += 1;
            problems.push(format!(
                "{}:{}: missed {} `{}` in: {}",
                item.file,
                item.line_no,
                e.0,
                &item.text[e.1..e.2],
                item.text
            ));
        }
    }

    let mut table = String::from("\nredaction corpus: precision / recall per rule\n");
    table += &format!(
        "{:<12} {:>5} {:>5} {:>5} {:>10} {:>8}\n",
        "rule", "tp", "fp", "fn", "precision", "recall"
    );
    let mut all_perfect = true;
    for (rule, s) in &scores {
        let precision = ratio(s.tp, s.tp + s.fp);
        let recall = ratio(s.tp, s.tp + s.fn_);
        all_perfect &= precision == 1.0 && recall == 1.0 && s.tp > 0;
        table += &format!(
            "{rule:<12} {:>5} {:>5} {:>5} {precision:>10.3} {recall:>8.3}\n",
            s.tp, s.fp, s.fn_
        );
    }
    for p in &problems {
        table += p;
        table.push('\n');
    }
    // Written to the stderr handle rather than with eprintln!, which the test harness captures:
    // the table shows on every run, with or without --nocapture.
    let _ = std::io::stderr().lock().write_all(table.as_bytes());
    assert!(
        all_perfect && problems.is_empty(),
        "{} corpus problems",
        problems.len()
    );
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        1.0
    } else {
        num as f64 / den as f64
    }
}

#[test]
fn redacted_corpus_keeps_no_planted_original() {
    let redactor = all_rules();
    for item in corpus() {
        let out = redactor.redact_str(&item.text);
        for (rule, s, e) in &item.expected {
            let original = &item.text[*s..*e];
            assert!(
                !out.contains(original),
                "{}:{}: {rule} value `{original}` survived: {out}",
                item.file,
                item.line_no
            );
        }
        if item.expected.is_empty() {
            assert_eq!(out, item.text, "{}:{}", item.file, item.line_no);
        }
    }
}
