//! The field path of a shape error, from where serde_json stopped reading.
//!
//! serde_json reports a type error, an unknown field or a missing field with the line and
//! column where it stopped; [`path_at`] re-reads the document up to there and names the value
//! being read (`providers.corp.remote_jwks.http_uri.timout`, `api_keys.clients[0]`). Reading
//! the configuration without a path-tracking deserializer keeps its code out of every VM (the
//! tracking wrapper was an eighth of the module); the path is computed only on the error path.

/// The byte offset of serde_json's `line` (1-based) and `column` (bytes read on that line).
pub(crate) fn offset_of(text: &str, line: usize, column: usize) -> usize {
    let start = if line <= 1 {
        0
    } else {
        text.bytes().enumerate().filter(|(_, b)| *b == b'\n').nth(line - 2).map_or(text.len(), |(i, _)| i + 1)
    };
    (start + column).min(text.len())
}

enum Frame {
    /// An object, and the key whose value is being read (none between members).
    Object(Option<String>),
    /// An array, and the index of the element being read.
    Array(usize),
}

/// The path (`a.b[2].c`, empty at the top level) of the value being read when serde_json
/// stopped at byte `offset` of `text`, a document that is valid JSON up to there.
/// (serde_json refuses an object or array where it wants another kind *before* reading its
/// opening bracket, and a scalar after reading it: either way the refused value is named.)
pub(crate) fn path_at(text: &str, offset: usize) -> String {
    let bytes = text.as_bytes();
    let end = offset.min(bytes.len());
    let mut stack: Vec<Frame> = Vec::new();
    let mut i = 0;
    while i < end {
        match bytes.get(i).copied().unwrap_or(b' ') {
            b'{' => stack.push(Frame::Object(None)),
            b'[' => stack.push(Frame::Array(0)),
            b'}' | b']' => {
                stack.pop();
            }
            b',' => match stack.last_mut() {
                Some(Frame::Array(index)) => *index += 1,
                Some(Frame::Object(key)) => *key = None,
                None => {}
            },
            b'"' => {
                let close = string_end(bytes, i + 1);
                if let Some(Frame::Object(key @ None)) = stack.last_mut() {
                    let raw = text.get(i..=close.min(bytes.len().saturating_sub(1))).unwrap_or("");
                    *key = Some(serde_json::from_str::<String>(raw).unwrap_or_else(|_| "?".into()));
                }
                i = close;
            }
            _ => {}
        }
        i += 1;
    }
    let mut path = String::new();
    for frame in &stack {
        match frame {
            Frame::Object(Some(key)) => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
            Frame::Object(None) => {}
            Frame::Array(index) => {
                path.push('[');
                path.push_str(&index.to_string());
                path.push(']');
            }
        }
    }
    path
}

/// The index of the `"` that closes the string whose content starts at `from` (the length of
/// `bytes` when it is not closed).
fn string_end(bytes: &[u8], from: usize) -> usize {
    let mut j = from;
    while let Some(&b) = bytes.get(j) {
        match b {
            b'\\' => j += 2,
            b'"' => return j,
            _ => j += 1,
        }
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use serde_json::Value;

    #[test]
    fn offsets_follow_serde_json_lines_and_columns() {
        let text = "{\n  \"a\": 1,\n  \"b\": x\n}";
        let e = serde_json::from_str::<Value>(text).unwrap_err();
        assert_eq!((e.line(), e.column()), (3, 8));
        assert_eq!(&text[offset_of(text, e.line(), e.column()) - 1..][..1], "x");
        assert_eq!(offset_of(text, 1, 0), 0);
        assert_eq!(offset_of(text, 9, 9), text.len(), "never past the end");
    }

    #[test]
    fn paths_name_keys_indices_and_escaped_keys() {
        let text = r#"{"a": {"b\"c": [1, {"d": 2}]}, "e": []}"#;
        let at = |needle: &str| path_at(text, text.find(needle).unwrap() + needle.len());
        assert_eq!(at(r#"{"a""#), "a");
        assert_eq!(at(r#""b\"c""#), "a.b\"c");
        assert_eq!(at("[1"), "a.b\"c[0]");
        assert_eq!(at(r#"{"d": 2"#), "a.b\"c[1].d");
        assert_eq!(at("2}"), "a.b\"c[1]", "after an element's closing brace: the element");
        assert_eq!(at(r#""e": "#), "e");
        assert_eq!(at(r#""e": ["#), "e[0]");
        assert_eq!(path_at(text, 0), "");
        assert_eq!(path_at(text, text.len()), "");
        assert_eq!(path_at("{\"a\": \"unterminated", 99), "a");
    }
}

/// The paths agree with serde_path_to_error's (the tracking deserializer this replaced) on
/// every shape error of every shipped example, each value replaced by each wrong kind and an
/// unknown field added to each object, compact and pretty-printed.
#[cfg(test)]
mod differential {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use serde::Deserialize as _;
    use serde_json::{json, Value};

    use super::super::schema::RawConfig;

    const EXAMPLES: [&str; 3] = [
        include_str!("../../../examples/config/jwt-apikeys-ratelimit.json"),
        include_str!("../../../examples/config/password-grant-events-rules.json"),
        include_str!("../../../examples/config/phantom-token.json"),
    ];

    /// Every variant of `doc` with one value replaced or one unknown member added.
    fn mutants(doc: &Value) -> Vec<Value> {
        fn walk(v: &Value, at: &mut Vec<Value>, out: &mut Vec<Value>, root: &Value) {
            let replace = |with: Value, out: &mut Vec<Value>| {
                let mut m = root.clone();
                let mut cur = &mut m;
                for step in at.iter() {
                    cur = match step {
                        Value::String(k) => cur.get_mut(k.as_str()).unwrap(),
                        Value::Number(i) => cur.get_mut(i.as_u64().unwrap() as usize).unwrap(),
                        _ => unreachable!(),
                    };
                }
                match with {
                    Value::Null if cur.is_object() => {
                        cur.as_object_mut().unwrap().insert("zz_unknown".into(), json!(1));
                    }
                    Value::Null => return,
                    w => *cur = w,
                }
                out.push(m);
            };
            for wrong in [json!(7), json!("x"), json!([1]), json!({"k": 1}), json!(true), json!(-1), Value::Null] {
                replace(wrong, out);
            }
            match v {
                Value::Object(o) => {
                    for (k, child) in o {
                        at.push(Value::String(k.clone()));
                        walk(child, at, out, root);
                        at.pop();
                    }
                }
                Value::Array(a) => {
                    for (i, child) in a.iter().enumerate() {
                        at.push(json!(i));
                        walk(child, at, out, root);
                        at.pop();
                    }
                }
                _ => {}
            }
        }
        let mut out = Vec::new();
        walk(doc, &mut Vec::new(), &mut out, doc);
        out
    }

    #[test]
    fn paths_match_the_tracking_deserializer() {
        let mut compared = 0;
        for example in EXAMPLES {
            let doc: Value = serde_json::from_str(example).unwrap();
            for m in mutants(&doc) {
                for text in [serde_json::to_string(&m).unwrap(), serde_json::to_string_pretty(&m).unwrap()] {
                    let mut de = serde_json::Deserializer::from_str(&text);
                    let Err(reference) = serde_path_to_error::deserialize::<_, RawConfig>(&mut de) else { continue };
                    let want = reference.path().to_string();
                    let want = if want == "." { String::new() } else { want };
                    let e = RawConfig::deserialize(&mut serde_json::Deserializer::from_str(&text)).err().unwrap();
                    assert_eq!(reference.inner().to_string(), e.to_string());
                    let got = super::path_at(&text, super::offset_of(&text, e.line(), e.column()));
                    assert_eq!(got, want, "{e} in {text}");
                    compared += 1;
                }
            }
        }
        eprintln!("{compared} shape errors compared");
        assert!(compared > 500, "{compared} shape errors compared");
    }
}
