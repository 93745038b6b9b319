//! CSV answers (RFC 4180): asked for with `?format=csv` or `Accept: text/csv`. Fields are
//! quoted when they hold a comma, a quote or a line break (quotes doubled), lines end with
//! CRLF, and numbers are written exactly as in the JSON answer.

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::error::{ApiResult, AppError};

/// Whether the client asked for CSV: `format=csv` (or `json`), else its `Accept` header.
pub fn wanted(format: Option<&str>, headers: &HeaderMap) -> ApiResult<bool> {
    match format {
        Some("csv") => Ok(true),
        Some("json") => Ok(false),
        Some(_) => Err(AppError::invalid("format", "must be json or csv")),
        None => Ok(headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|media| {
                media
                    .split(';')
                    .next()
                    .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/csv"))
            })),
    }
}

/// A CSV document being written.
#[derive(Debug, Default)]
pub struct Csv {
    text: String,
}

impl Csv {
    pub fn new(header: &[&str]) -> Self {
        let mut csv = Csv::default();
        csv.row(header.iter().copied());
        csv
    }

    pub fn row<'a>(&mut self, fields: impl IntoIterator<Item = &'a str>) {
        for (i, field) in fields.into_iter().enumerate() {
            if i > 0 {
                self.text.push(',');
            }
            if field.contains([',', '"', '\r', '\n']) {
                self.text.push('"');
                self.text.push_str(&field.replace('"', "\"\""));
                self.text.push('"');
            } else {
                self.text.push_str(field);
            }
        }
        self.text.push_str("\r\n");
    }

    /// The answer, offered as a download named `filename`.
    pub fn into_response(self, filename: &str) -> Response {
        let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\""))
            .unwrap_or_else(|_| HeaderValue::from_static("attachment"));
        (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/csv; charset=utf-8"),
                ),
                (header::CONTENT_DISPOSITION, disposition),
            ],
            self.text,
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_what_needs_it() {
        let mut csv = Csv::new(&["a", "b"]);
        csv.row(["plain", "1.50"]);
        csv.row(["has,comma", "say \"hi\""]);
        csv.row(["two\nlines", ""]);
        assert_eq!(
            csv.text,
            "a,b\r\nplain,1.50\r\n\"has,comma\",\"say \"\"hi\"\"\"\r\n\"two\nlines\",\r\n"
        );
    }

    #[test]
    fn format_beats_accept() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json;q=0.9, text/csv"),
        );
        assert!(wanted(None, &h).unwrap());
        assert!(!wanted(Some("json"), &h).unwrap());
        assert!(wanted(Some("csv"), &HeaderMap::new()).unwrap());
        assert!(!wanted(None, &HeaderMap::new()).unwrap());
        assert!(wanted(Some("xml"), &h).is_err());
    }
}
