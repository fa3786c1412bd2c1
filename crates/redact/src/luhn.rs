//! Card-number checks: the Luhn checksum and a coarse issuer-prefix test.
//!
//! Both keep digit runs that merely look long (order ids, epoch timestamps, ISBNs) from being
//! redacted as card numbers.

/// True when the ASCII digits pass the Luhn (mod 10) checksum. Non-digits make it false.
pub fn luhn_valid(digits: &[u8]) -> bool {
    if digits.is_empty() {
        return false;
    }
    // Every second digit from the right counts doubled, its two digits summed.
    const DOUBLED: [u32; 10] = [0, 2, 4, 6, 8, 1, 3, 5, 7, 9];
    let mut sum = 0u32;
    let mut doubled = false;
    for &b in digits.iter().rev() {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return false;
        }
        sum += if doubled {
            DOUBLED[usize::from(d)]
        } else {
            u32::from(d)
        };
        doubled = !doubled;
    }
    sum.is_multiple_of(10)
}

/// True when the length and leading digits fit a real card scheme (Visa, Mastercard, Amex,
/// Diners, JCB, Discover, UnionPay, Maestro). Rejects, for example, 13-digit epoch millis.
pub fn plausible_card(digits: &[u8]) -> bool {
    let len = digits.len();
    if !(13..=19).contains(&len) || !digits[..4].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let p4 = digits[..4]
        .iter()
        .fold(0u32, |acc, &b| acc * 10 + u32::from(b - b'0'));
    let (p2, p3) = (p4 / 100, p4 / 10);
    // The scheme first: most long digit runs (timestamps, ids) fail it, and then the rest
    // of the run need not be looked at.
    let scheme = match digits[0] {
        b'4' => matches!(len, 13 | 16 | 19),
        b'5' => ((51..=55).contains(&p2) && len == 16) || p2 == 50 || (56..=59).contains(&p2),
        b'2' => (2221..=2720).contains(&p4) && len == 16,
        b'3' => {
            ((p2 == 34 || p2 == 37) && len == 15)
                || ((300..=305).contains(&p3) || matches!(p2, 36 | 38 | 39)) && len >= 14
                || (3528..=3589).contains(&p4) && len >= 16
        }
        b'6' => true,
        _ => false,
    };
    scheme && digits[4..].iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn() {
        assert!(luhn_valid(b"4111111111111111"));
        assert!(luhn_valid(b"5555555555554444"));
        assert!(luhn_valid(b"378282246310005"));
        assert!(luhn_valid(b"79927398713"));
        assert!(!luhn_valid(b"4111111111111112"));
        assert!(!luhn_valid(b"79927398710"));
        assert!(!luhn_valid(b""));
        assert!(!luhn_valid(b"4111-1111"));
    }

    #[test]
    fn schemes() {
        assert!(plausible_card(b"4111111111111111"));
        assert!(plausible_card(b"4222222222222"));
        assert!(plausible_card(b"378282246310005"));
        assert!(plausible_card(b"30569309025904"));
        assert!(plausible_card(b"6011111111111117"));
        assert!(plausible_card(b"3530111333300000"));
        assert!(plausible_card(b"2223003122003222"));
        assert!(!plausible_card(b"1714566896789"), "epoch millis");
        assert!(!plausible_card(b"9780306406157"), "ISBN-13");
        assert!(!plausible_card(b"411111111111111"), "15-digit visa");
        assert!(!plausible_card(b"371449635398431x"));
        assert!(!plausible_card(b"4111x11111111111"));
        assert!(!plausible_card(b"41x1111111111111"));
    }
}
