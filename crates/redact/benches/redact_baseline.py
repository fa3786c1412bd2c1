#!/usr/bin/env python3
"""Baseline for the runcap-redact throughput benchmark.

The same default rules as the Rust crate (email, ssn, credit_card, phone, api_key), written the
way a Python script would: one `re` pattern per format, applied to every line, with the Luhn and
range checks in Python, overlaps settled by earliest start then longest match.

usage: redact_baseline.py INPUT OUTPUT [--prefilter]

--prefilter skips a rule's patterns on lines that cannot match (no `@`, no digit, no keyword),
the same gating the Rust engine does, to show how much of the gap is gating alone.

Prints one JSON object: seconds, bytes, lines, counts, maxrss_kb.
"""

import json
import re
import resource
import sys
import time

WORD = rb"A-Za-z0-9_"

EMAIL = re.compile(
    rb"(?<![A-Za-z0-9._%+-])[A-Za-z0-9_%+-][A-Za-z0-9._%+-]{0,63}(?<!\.)@"
    rb"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,}(?![A-Za-z0-9-]*[A-Za-z0-9])"
)
SSN = re.compile(
    rb"(?<![A-Za-z0-9_+])(?<![0-9][.-])([0-9]{3})-([0-9]{2})-([0-9]{4})(?![A-Za-z0-9_])(?![.-][0-9])"
)
CARD = re.compile(rb"(?<![A-Za-z0-9_+])(?<![0-9][.-])[0-9]{13,19}(?![A-Za-z0-9_])(?![.-][0-9])")
CARD_GROUPED = re.compile(rb"(?<![A-Za-z0-9_+])(?<![0-9][.-])[0-9]{4}([ -])[0-9]+(?:\1[0-9]+)*")
PHONE_INTL = re.compile(rb"(?<![A-Za-z0-9_])\+[0-9]+(?:[ .-]?\([0-9]+\)|[ .-][0-9]+)*")
PHONE_NANP = re.compile(
    rb"(?<![A-Za-z0-9_+])(?<![0-9][.-])(?:1[-.])?"
    rb"(?:(?<![A-Za-z0-9_])\(([0-9]{3})\) ?([0-9]{3})[-. ]|([0-9]{3})([-.])([0-9]{3})\4)"
    rb"[0-9]{4}(?![A-Za-z0-9_])(?![.-][0-9])"
)
BEARER = re.compile(rb"(?i)(?<![A-Za-z0-9_])bearer[ \t]+([A-Za-z0-9._~+/-]+)(=*)(?![A-Za-z0-9_])")
SK = re.compile(rb"(?<![A-Za-z0-9_-])sk(?:-|_live_|_test_)[A-Za-z0-9_-]*")
AWS = re.compile(rb"(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])")
GITHUB = re.compile(
    rb"(?<![A-Za-z0-9])(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,})(?![A-Za-z0-9_])"
)
JWT = re.compile(rb"(?<![A-Za-z0-9_])eyJ[A-Za-z0-9_-]{7,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*")
KEY_VALUE = re.compile(
    rb"(?i)(?<![A-Za-z0-9_-])([A-Za-z0-9_-]*(?:token|secret|password|passwd|api_key|apikey|api-key"
    rb"|access_key|accesskey|access-key|secret_key|secretkey|secret-key|private_key|privatekey"
    rb"|private-key))(?:[\"']|\\\")?[ \t]*(?:=>?|:=?)(?!:)[ \t]*"
)
SUFFIXES = [
    b"token", b"secret", b"password", b"passwd", b"api_key", b"apikey", b"api-key",
    b"access_key", b"accesskey", b"access-key", b"secret_key", b"secretkey", b"secret-key",
    b"private_key", b"privatekey", b"private-key",
]
PLACEHOLDERS = {b"null", b"none", b"true", b"false", b"nil", b"undefined"}
UNQUOTED_STOP = re.compile(rb"[ \t\r\n&,;\"')}\]<>|\\]")

RULES = ["email", "ssn", "credit_card", "phone", "api_key"]
REPLACEMENT = {
    "email": b"[EMAIL_REDACTED]",
    "ssn": b"[SSN_REDACTED]",
    "credit_card": b"[CC_REDACTED]",
    "phone": b"[PHONE_REDACTED]",
    "api_key": b"[API_KEY_REDACTED]",
}
PRIORITY = {name: i for i, name in enumerate(RULES)}
KEYWORDS = (b"bearer", b"sk-", b"sk_", b"akia", b"asia", b"gh", b"eyj", b"token", b"secret",
            b"passw", b"key")


def luhn(digits):
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ch - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def plausible_card(d):
    n = len(d)
    if not 13 <= n <= 19:
        return False
    p2, p3, p4 = int(d[:2]), int(d[:3]), int(d[:4])
    first = d[0:1]
    if first == b"4":
        return n in (13, 16, 19)
    if first == b"5":
        return (51 <= p2 <= 55 and n == 16) or p2 == 50 or 56 <= p2 <= 59
    if first == b"2":
        return 2221 <= p4 <= 2720 and n == 16
    if first == b"3":
        return ((p2 in (34, 37) and n == 15) or ((300 <= p3 <= 305 or p2 in (36, 38, 39)) and n >= 14)
                or (3528 <= p4 <= 3589 and n >= 16))
    return first == b"6"


def is_word(b):
    return (48 <= b <= 57) or (65 <= b <= 90) or (97 <= b <= 122) or b == 95


def right_ok(line, end):
    if end >= len(line):
        return True
    b = line[end]
    if is_word(b):
        return False
    return not (b in (46, 45) and end + 1 < len(line) and 48 <= line[end + 1] <= 57)


def cards(line, out):
    for m in CARD.finditer(line):
        d = m.group(0)
        if plausible_card(d) and luhn(d):
            out.append((m.start(), m.end(), "credit_card"))
    for m in CARD_GROUPED.finditer(line):
        s, e, sep = m.start(), m.end(), m.group(1)
        if sep == b" " and s >= 2 and line[s - 1] == 32:
            i = s - 1
            while i > 0 and 48 <= line[i - 1] <= 57:
                i -= 1
            if i < s - 1 and (i == 0 or not is_word(line[i - 1])):
                continue
        groups = m.group(0).split(sep)
        lens = [len(g) for g in groups]
        if len(lens) > 5:
            continue
        layout = lens in ([4, 6, 5], [4, 6, 4]) or (
            len(lens) >= 4 and all(x == 4 for x in lens[:-1]) and 1 <= lens[-1] <= 4)
        d = b"".join(groups)
        if layout and right_ok(line, e) and plausible_card(d) and luhn(d):
            out.append((s, e, "credit_card"))


def phones(line, out):
    for m in PHONE_INTL.finditer(line):
        best = intl_end(line, m.start() + 1)
        if best is not None:
            out.append((m.start(), best, "phone"))
    for m in PHONE_NANP.finditer(line):
        area = m.group(1) or m.group(3)
        exchange = m.group(2) or m.group(5)
        if int(area) >= 200 and int(exchange) >= 200:
            out.append((m.start(), m.end(), "phone"))


def intl_end(line, s):
    n = len(line)
    pos, digits, groups, first_len, short, best = s, 0, 0, 0, 0, None
    while True:
        paren = groups > 0 and pos < n and line[pos] == 40
        ds = pos + (1 if paren else 0)
        de = ds
        while de < n and 48 <= line[de] <= 57:
            de += 1
        glen = de - ds
        if glen == 0 or glen > 12:
            break
        ge = de
        if paren:
            if de >= n or line[de] != 41:
                break
            ge += 1
        digits += glen
        groups += 1
        if groups == 1:
            first_len = glen
        elif glen == 1:
            short += 1
        if digits > 15 or short > 1:
            break
        if digits >= 8 and (groups == 1 or first_len <= 3) and (ge >= n or not is_word(line[ge])):
            best = ge
        q = ge
        if q < n and line[q] in (32, 45, 46):
            q += 1
        elif not paren:
            break
        if q < n and (48 <= line[q] <= 57 or line[q] == 40):
            pos = q
        else:
            break
    if best is None:
        return None
    if best + 1 < n and line[best] == 46 and 48 <= line[best + 1] <= 57:
        return None
    return best


def sensitive_key(key):
    low = key.lower()
    for suf in SUFFIXES:
        if low.endswith(suf):
            cut = len(key) - len(suf)
            if (cut == 0 or key[cut - 1] in (95, 45, 46)
                    or (65 <= key[cut] <= 90 and (97 <= key[cut - 1] <= 122 or 48 <= key[cut - 1] <= 57))):
                return True
    return False


def secret_value(v):
    if not v or v.strip(b"*") == b"":
        return False
    if v.startswith(b"[") and v.endswith(b"REDACTED]"):
        return False
    return v.lower() not in PLACEHOLDERS


def closing_quote(line, i, q):
    n = len(line)
    while i < n:
        if line[i] == 92:
            i += 2
        elif line[i] == q:
            return i
        else:
            i += 1
    return None


def unquoted_end(line, i):
    m = UNQUOTED_STOP.search(line, i)
    return m.start() if m else len(line)


def key_values(line, out):
    for m in KEY_VALUE.finditer(line):
        key = m.group(1)
        ks = m.start(1)
        if not sensitive_key(key) or (ks > 0 and line[ks - 1] in (47, 92)):
            continue
        p = m.end()
        if p >= len(line):
            continue
        c = line[p]
        if c in (34, 39):
            close = closing_quote(line, p + 1, c)
            vs, ve = p + 1, close if close is not None else unquoted_end(line, p + 1)
        elif c == 92 and line[p + 1:p + 2] == b'"':
            vs = p + 2
            k = line.find(b'\\"', vs)
            ve = k if k >= 0 else unquoted_end(line, vs)
        elif c in (123, 91):
            continue
        else:
            vs, ve = p, unquoted_end(line, p)
        v = line[vs:ve]
        if secret_value(v) and v.lower() != b"bearer":
            out.append((vs, ve, "api_key"))


def api_keys(line, out):
    for m in BEARER.finditer(line):
        body = m.group(1)
        has_digit = any(48 <= b <= 57 for b in body)
        mixed = any(65 <= b <= 90 for b in body) and any(97 <= b <= 122 for b in body)
        if len(body) >= 8 and (has_digit or (len(body) >= 16 and mixed)):
            out.append((m.start(1), m.end(2), "api_key"))
    for m in SK.finditer(line):
        body = m.group(0)[3:]
        if len(body) >= 20 and any(48 <= b <= 57 for b in body):
            out.append((m.start(), m.end(), "api_key"))
    for pat in (AWS, GITHUB, JWT):
        for m in pat.finditer(line):
            out.append((m.start(), m.end(), "api_key"))
    key_values(line, out)


def emails(line, out):
    for m in EMAIL.finditer(line):
        out.append((m.start(), m.end(), "email"))


def ssns(line, out):
    for m in SSN.finditer(line):
        area, group, serial = int(m.group(1)), int(m.group(2)), int(m.group(3))
        if area not in (0, 666) and area < 900 and group != 0 and serial != 0:
            out.append((m.start(), m.end(), "ssn"))


HAS_DIGIT = re.compile(rb"[0-9]")


def collect(line, prefilter):
    spans = []
    if not prefilter or b"@" in line:
        emails(line, spans)
    if not prefilter or HAS_DIGIT.search(line):
        ssns(line, spans)
        cards(line, spans)
        phones(line, spans)
    if not prefilter or any(k in line.lower() for k in KEYWORDS):
        api_keys(line, spans)
    return spans


def redact(line, prefilter, counts):
    spans = collect(line, prefilter)
    if not spans:
        return line
    spans.sort(key=lambda s: (s[0], -s[1], PRIORITY[s[2]]))
    merged = []
    for s, e, rule in spans:
        if merged and s < merged[-1][1]:
            if e > merged[-1][1]:
                merged[-1][1] = e
        else:
            merged.append([s, e, rule])
    parts = []
    pos = 0
    for s, e, rule in merged:
        parts.append(line[pos:s])
        parts.append(REPLACEMENT[rule])
        counts[rule] = counts.get(rule, 0) + 1
        pos = e
    parts.append(line[pos:])
    return b"".join(parts)


def peak_rss_kb():
    """Peak RSS of this process. Linux's VmHWM starts afresh at exec; ru_maxrss does not (it
    keeps the peak of the process that forked us), so it is only the fallback."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main():
    src, dst = sys.argv[1], sys.argv[2]
    prefilter = "--prefilter" in sys.argv[3:]
    counts = {}
    lines = 0
    size = 0
    start = time.perf_counter()
    with open(src, "rb") as fin, open(dst, "wb", buffering=1 << 18) as fout:
        for raw in fin:
            lines += 1
            size += len(raw)
            if raw.endswith(b"\r\n"):
                body, end = raw[:-2], b"\r\n"
            elif raw.endswith(b"\n"):
                body, end = raw[:-1], b"\n"
            else:
                body, end = raw, b""
            fout.write(redact(body, prefilter, counts) + end)
    seconds = time.perf_counter() - start
    print(json.dumps({
        "seconds": seconds,
        "bytes": size,
        "lines": lines,
        "counts": counts,
        "maxrss_kb": peak_rss_kb(),
    }))


if __name__ == "__main__":
    main()
