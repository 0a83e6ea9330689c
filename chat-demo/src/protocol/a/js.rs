//! JavaScript's text forms of JSON values, as the seed's server (written
//! in JavaScript) turns names and messages into strings.

use serde_json::Value;

/// JavaScript's `"" + value` for strings, numbers and booleans; `None` for
/// the values whose JavaScript form is not useful text (objects, arrays,
/// `null`).
pub(super) fn js_string(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Bool(flag) => Some(flag.to_string()),
        Value::Number(number) => number.as_f64().map(js_number),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// Whether JavaScript treats the value as false in `value || fallback`.
pub(super) fn is_js_falsy(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(false) => true,
        Value::String(text) => text.is_empty(),
        Value::Number(number) => number.as_f64() == Some(0.0),
        Value::Bool(true) | Value::Array(_) | Value::Object(_) => false,
    }
}

/// JavaScript's `Number.prototype.toString()` for a finite number
/// (ECMAScript `Number::toString`, radix 10): shortest round-trip digits,
/// plain notation for exponents in -7..21, exponent notation otherwise.
pub(super) fn js_number(number: f64) -> String {
    if number == 0.0 {
        // Also -0, which JavaScript prints as "0".
        return "0".to_owned();
    }
    let sign = if number < 0.0 { "-" } else { "" };
    // Rust's `{:e}` gives the same shortest round-trip digits as JavaScript,
    // as `d[.ddd]e<exp>`.
    let scientific = format!("{:e}", number.abs());
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let exponent: i64 = exponent.parse().unwrap_or(0);
    // The value is 0.d1d2...dk × 10^n, in the spec's terms.
    let k = i64::try_from(digits.len()).unwrap_or(i64::MAX);
    let n = exponent + 1;
    let body = if k <= n && n <= 21 {
        format!(
            "{digits}{}",
            "0".repeat(usize::try_from(n - k).unwrap_or(0))
        )
    } else if 0 < n && n <= 21 {
        let (whole, fraction) = digits.split_at(usize::try_from(n).unwrap_or(0));
        format!("{whole}.{fraction}")
    } else if -6 < n && n <= 0 {
        format!("0.{}{digits}", "0".repeat(usize::try_from(-n).unwrap_or(0)))
    } else {
        let exponent_sign = if n - 1 < 0 { '-' } else { '+' };
        let (first, rest) = digits.split_at(1);
        let fraction = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        format!("{first}{fraction}e{exponent_sign}{}", (n - 1).abs())
    };
    format!("{sign}{body}")
}
