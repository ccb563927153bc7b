//! The .npy header: a Python dict literal such as
//! `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`.
//!
//! A small hand-written parser for the subset of Python literals numpy writes
//! (strings, ints, `True`/`False`/`None`, tuples, lists, dicts). Every failure is
//! an `Err(String)`; nesting depth is bounded so hostile headers cannot overflow the stack.

/// A parsed Python literal.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PyVal {
    Str(String),
    Int(i128),
    Bool(bool),
    None,
    Tuple(Vec<PyVal>),
    List(Vec<PyVal>),
    Dict(Vec<(PyVal, PyVal)>),
}

impl PyVal {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            PyVal::Str(_) => "a string",
            PyVal::Int(_) => "an integer",
            PyVal::Bool(_) => "a bool",
            PyVal::None => "None",
            PyVal::Tuple(_) => "a tuple",
            PyVal::List(_) => "a list",
            PyVal::Dict(_) => "a dict",
        }
    }
}

const MAX_DEPTH: usize = 16;

struct Parser<'a> {
    s: &'a [char],
    pos: usize,
}

impl Parser<'_> {
    fn err<T>(&self, msg: impl std::fmt::Display) -> Result<T, String> {
        Err(format!(
            "header is not a valid Python literal: {msg} at character {}",
            self.pos
        ))
    }
    fn skip_ws(&mut self) {
        while self.pos < self.s.len() && matches!(self.s[self.pos], ' ' | '\t' | '\n' | '\r') {
            self.pos += 1;
        }
    }
    fn peek(&self) -> Option<char> {
        self.s.get(self.pos).copied()
    }
    fn value(&mut self, depth: usize) -> Result<PyVal, String> {
        if depth > MAX_DEPTH {
            return self.err(format!("nesting deeper than {MAX_DEPTH}"));
        }
        self.skip_ws();
        match self.peek() {
            None => self.err("unexpected end"),
            Some('\'') | Some('"') => self.string(),
            Some('(') => self.seq(depth, ')'),
            Some('[') => self.seq(depth, ']'),
            Some('{') => self.dict(depth),
            Some(c) if c.is_ascii_digit() || c == '-' || c == '+' => self.int(),
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                let start = self.pos;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    self.pos += 1;
                }
                let word: String = self.s[start..self.pos].iter().collect();
                match word.as_str() {
                    "True" => Ok(PyVal::Bool(true)),
                    "False" => Ok(PyVal::Bool(false)),
                    "None" => Ok(PyVal::None),
                    _ => {
                        self.pos = start;
                        self.err(format!("unexpected name '{}'", truncate(&word)))
                    }
                }
            }
            Some(c) => self.err(format!("unexpected character {c:?}")),
        }
    }
    fn string(&mut self) -> Result<PyVal, String> {
        let quote = self.s[self.pos];
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return self.err("unterminated string"),
                Some(c) if c == quote => {
                    self.pos += 1;
                    return Ok(PyVal::Str(out));
                }
                Some('\\') => {
                    self.pos += 1;
                    match self.peek() {
                        None => return self.err("unterminated string"),
                        Some(c @ ('\\' | '\'' | '"')) => out.push(c),
                        Some('n') => out.push('\n'),
                        Some('t') => out.push('\t'),
                        Some(c) => {
                            out.push('\\');
                            out.push(c);
                        }
                    }
                    self.pos += 1;
                }
                Some('\n') => return self.err("newline inside string"),
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }
    fn int(&mut self) -> Result<PyVal, String> {
        let mut neg = false;
        if let Some(c @ ('-' | '+')) = self.peek() {
            neg = c == '-';
            self.pos += 1;
        }
        let start = self.pos;
        let mut v: i128 = 0;
        while let Some(c) = self.peek().filter(|c| c.is_ascii_digit()) {
            v = match v
                .checked_mul(10)
                .and_then(|v| v.checked_add(i128::from(c as u8 - b'0')))
            {
                Some(v) => v,
                None => return self.err("integer too large"),
            };
            self.pos += 1;
        }
        if self.pos == start {
            return self.err("expected digits");
        }
        // Python 2 longs (`3L`), as very old numpy versions wrote them.
        if matches!(self.peek(), Some('L' | 'l')) {
            self.pos += 1;
        }
        if self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
        {
            return self.err("malformed number");
        }
        Ok(PyVal::Int(if neg { -v } else { v }))
    }
    /// A tuple `( ... )` or list `[ ... ]`. `(x)` without a comma is just `x`, as in Python.
    fn seq(&mut self, depth: usize, close: char) -> Result<PyVal, String> {
        self.pos += 1;
        let mut items = Vec::new();
        let mut saw_comma = false;
        loop {
            self.skip_ws();
            if self.peek() == Some(close) {
                self.pos += 1;
                break;
            }
            items.push(self.value(depth + 1)?);
            self.skip_ws();
            match self.peek() {
                Some(',') => {
                    saw_comma = true;
                    self.pos += 1;
                }
                Some(c) if c == close => {
                    self.pos += 1;
                    break;
                }
                None => return self.err("unexpected end inside a tuple or list"),
                Some(c) => return self.err(format!("expected ',' or '{close}', found {c:?}")),
            }
        }
        if close == ']' {
            Ok(PyVal::List(items))
        } else if items.len() == 1 && !saw_comma {
            Ok(items.pop().unwrap_or(PyVal::None))
        } else {
            Ok(PyVal::Tuple(items))
        }
    }
    fn dict(&mut self, depth: usize) -> Result<PyVal, String> {
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            self.skip_ws();
            if self.peek() == Some('}') {
                self.pos += 1;
                break;
            }
            let k = self.value(depth + 1)?;
            self.skip_ws();
            if self.peek() != Some(':') {
                return self.err("expected ':' in dict");
            }
            self.pos += 1;
            let v = self.value(depth + 1)?;
            items.push((k, v));
            self.skip_ws();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some('}') => {
                    self.pos += 1;
                    break;
                }
                None => return self.err("unexpected end inside a dict"),
                Some(c) => return self.err(format!("expected ',' or '}}', found {c:?}")),
            }
        }
        Ok(PyVal::Dict(items))
    }
}

fn truncate(s: &str) -> String {
    if s.chars().count() > 40 {
        format!("{}...", s.chars().take(40).collect::<String>())
    } else {
        s.to_string()
    }
}

/// Parses one Python literal; only whitespace may follow it.
pub(crate) fn parse_literal(text: &str) -> Result<PyVal, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut p = Parser { s: &chars, pos: 0 };
    let v = p.value(0)?;
    p.skip_ws();
    if p.pos != chars.len() {
        return p.err("trailing characters after the dict");
    }
    Ok(v)
}

/// What the header says about the array.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Header {
    pub descr: String,
    pub fortran_order: bool,
    pub shape: Vec<usize>,
}

/// Parses and validates the header dict (exactly the keys descr, fortran_order, shape).
pub(crate) fn parse_header(text: &str) -> Result<Header, String> {
    let items = match parse_literal(text)? {
        PyVal::Dict(items) => items,
        other => return Err(format!("header is {}, expected a dict", other.kind())),
    };
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    for (k, v) in items {
        let PyVal::Str(key) = k else {
            return Err(format!(
                "header has a key that is {}, expected a string",
                k.kind()
            ));
        };
        let slot = match key.as_str() {
            "descr" => &mut descr,
            "fortran_order" => &mut fortran,
            "shape" => &mut shape,
            _ => return Err(format!("header has unexpected key '{}'", truncate(&key))),
        };
        if slot.replace(v).is_some() {
            return Err(format!("header repeats key '{key}'"));
        }
    }
    let descr = match descr {
        Some(PyVal::Str(s)) => s,
        Some(PyVal::List(_)) => {
            return Err("descr is a list (a structured dtype), which is unsupported".into());
        }
        Some(v) => return Err(format!("descr is {}, expected a string", v.kind())),
        None => return Err("header lacks key 'descr'".into()),
    };
    let fortran_order = match fortran {
        Some(PyVal::Bool(b)) => b,
        Some(v) => {
            return Err(format!(
                "fortran_order is {}, expected True or False",
                v.kind()
            ))
        }
        None => return Err("header lacks key 'fortran_order'".into()),
    };
    let shape = match shape {
        Some(PyVal::Tuple(dims)) => dims
            .iter()
            .map(|d| match d {
                PyVal::Int(n) => {
                    usize::try_from(*n).map_err(|_| format!("shape has invalid dimension {n}"))
                }
                v => Err(format!(
                    "shape has a dimension that is {}, expected an integer",
                    v.kind()
                )),
            })
            .collect::<Result<Vec<usize>, String>>()?,
        Some(v) => return Err(format!("shape is {}, expected a tuple", v.kind())),
        None => return Err("header lacks key 'shape'".into()),
    };
    Ok(Header {
        descr,
        fortran_order,
        shape,
    })
}

/// Formats a header dict the way numpy does.
pub(crate) fn format_header(descr: &str, shape: &[usize]) -> String {
    let dims = match shape {
        [] => "()".to_string(),
        [d] => format!("({d},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {dims}, }}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_numpy_headers() {
        let h = parse_header("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }   \n")
            .unwrap();
        assert_eq!(
            h,
            Header {
                descr: "<f4".into(),
                fortran_order: false,
                shape: vec![2, 3]
            }
        );
        let h = parse_header("{\"descr\":\"|b1\",\"fortran_order\":True,\"shape\":(7,)}").unwrap();
        assert_eq!(h.shape, vec![7]);
        assert!(h.fortran_order);
        let h = parse_header("{'descr': '<i8', 'fortran_order': False, 'shape': ()}").unwrap();
        assert!(h.shape.is_empty());
        let h =
            parse_header("{'descr': '<i8', 'fortran_order': False, 'shape': (3L, 4L), }").unwrap();
        assert_eq!(h.shape, vec![3, 4]);
    }

    #[test]
    fn formats_like_numpy() {
        assert_eq!(
            format_header("<f4", &[2, 3]),
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"
        );
        assert_eq!(
            format_header("<f4", &[5]),
            "{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }"
        );
        assert_eq!(
            format_header("<f4", &[]),
            "{'descr': '<f4', 'fortran_order': False, 'shape': (), }"
        );
        for shape in [vec![], vec![1], vec![4, 0, 2]] {
            assert_eq!(
                parse_header(&format_header("<u2", &shape)).unwrap().shape,
                shape
            );
        }
    }

    #[test]
    fn rejects_bad_headers() {
        for bad in [
            "",
            "{",
            "{'descr': '<f4'",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (3)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (-3,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (3.5,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999999999999999999999,)}",
            "{'descr': '<f4', 'fortran_order': 0, 'shape': (3,)}",
            "{'descr': '<f4', 'shape': (3,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), 'extra': 1}",
            "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (3,)}",
            "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (3,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (3,)} junk",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (3,)",
            "{'descr': '<f4, 'fortran_order': False, 'shape': (3,)}",
            "{'descr': __import__('os'), 'fortran_order': False, 'shape': (3,)}",
            "[1, 2]",
        ] {
            assert!(parse_header(bad).is_err(), "accepted {bad:?}");
        }
        let deep = format!("{}{}", "(".repeat(100_000), ")".repeat(100_000));
        assert!(parse_literal(&deep).is_err());
    }
}
