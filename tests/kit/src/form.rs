//! A small reader of `multipart/form-data` bodies and a wiremock matcher built on it, for the
//! tests of adapters whose upstream takes forms (OpenAI's `/images/edits`, Stability): they
//! assert the exact parts an adapter sends, as `body_json` does for JSON calls.

use wiremock::{Match, Request};

/// One part of a form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormPart {
    pub name: String,
    pub file_name: Option<String>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl FormPart {
    /// A text part, as openai-python sends one: no file name, no `Content-Type`.
    pub fn text(name: &str, value: &str) -> Self {
        Self {
            name: name.into(),
            file_name: None,
            content_type: None,
            body: value.as_bytes().to_vec(),
        }
    }

    /// A file part.
    pub fn file(name: &str, file_name: &str, content_type: &str, body: &[u8]) -> Self {
        Self {
            name: name.into(),
            file_name: Some(file_name.into()),
            content_type: Some(content_type.into()),
            body: body.to_vec(),
        }
    }
}

/// Where `needle` first occurs in `haystack` at or after `from`.
pub fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|window| window == needle)
        .map(|at| at + from)
}

/// How often `needle` occurs in `haystack`.
pub fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|window| *window == needle)
        .count()
}

/// The parts of a `multipart/form-data` request, in order.
pub fn parse_form(request: &Request) -> Result<Vec<FormPart>, String> {
    let content_type = request
        .headers
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .ok_or("no Content-Type")?;
    let boundary = content_type
        .strip_prefix("multipart/form-data; boundary=")
        .ok_or_else(|| format!("not a form: {content_type}"))?
        .trim_matches('"');
    let delimiter = format!("--{boundary}").into_bytes();
    let body = &request.body;
    if !body.starts_with(&delimiter) {
        return Err("the body does not start with the boundary".into());
    }
    let mut parts = Vec::new();
    let mut at = delimiter.len();
    loop {
        match body.get(at..at + 2) {
            Some(b"--") => return Ok(parts),
            Some(b"\r\n") => at += 2,
            _ => return Err(format!("bad delimiter line at byte {at}")),
        }
        let mut closing = b"\r\n".to_vec();
        closing.extend_from_slice(&delimiter);
        let end = find(body, &closing, at).ok_or("a part is not closed")?;
        parts.push(parse_part(&body[at..end])?);
        at = end + closing.len();
    }
}

/// One part: its headers, a blank line, its content.
fn parse_part(part: &[u8]) -> Result<FormPart, String> {
    let split = find(part, b"\r\n\r\n", 0).ok_or("a part has no header end")?;
    let headers = std::str::from_utf8(&part[..split]).map_err(|e| e.to_string())?;
    let mut parsed = FormPart {
        name: String::new(),
        file_name: None,
        content_type: None,
        body: part[split + 4..].to_vec(),
    };
    for line in headers.split("\r\n") {
        let (header, value) = line.split_once(':').ok_or("a bad part header")?;
        match header.to_ascii_lowercase().as_str() {
            "content-disposition" => {
                let mut params = value.split(';').map(str::trim);
                if params.next() != Some("form-data") {
                    return Err(format!("not form-data: {value}"));
                }
                for param in params {
                    let (key, quoted) = param.split_once('=').ok_or("a bad parameter")?;
                    let text = quoted.trim_matches('"').to_owned();
                    match key {
                        "name" => parsed.name = text,
                        "filename" => parsed.file_name = Some(text),
                        other => return Err(format!("unexpected parameter {other}")),
                    }
                }
            }
            "content-type" => parsed.content_type = Some(value.trim().to_owned()),
            other => return Err(format!("unexpected part header {other}")),
        }
    }
    Ok(parsed)
}

/// Matches a form holding exactly `text` (in any order) followed by exactly `files` (in
/// order). A mismatch is printed, since wiremock only reports that nothing matched.
#[derive(Debug)]
pub struct ExactForm {
    pub text: Vec<FormPart>,
    pub files: Vec<FormPart>,
}

/// An [`ExactForm`] of the `text` fields and `files`.
pub fn exact_form(text: &[(&str, &str)], files: Vec<FormPart>) -> ExactForm {
    ExactForm {
        text: text
            .iter()
            .map(|(name, value)| FormPart::text(name, value))
            .collect(),
        files,
    }
}

impl Match for ExactForm {
    fn matches(&self, request: &Request) -> bool {
        let parts = match parse_form(request) {
            Ok(parts) => parts,
            Err(error) => {
                eprintln!("unreadable form: {error}");
                return false;
            }
        };
        let split = parts.partition_point(|part| part.file_name.is_none());
        let (mut text, files) = (parts[..split].to_vec(), &parts[split..]);
        let mut expected = self.text.clone();
        text.sort_by(|a, b| a.name.cmp(&b.name));
        expected.sort_by(|a, b| a.name.cmp(&b.name));
        let matches = text == expected && files == self.files.as_slice();
        if !matches {
            eprintln!("form mismatch:\n  text {text:?}\n  want {expected:?}\n  files {files:?}");
        }
        matches
    }
}
