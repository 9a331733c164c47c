//! Decoding of script replies. Replies are parsed by hand, so every accessor checks the shape
//! and reports a [`Error::Protocol`] instead of panicking on anything unexpected.

use fred::types::Value;

use crate::base::error::{Error, Result};

pub(crate) struct Reply {
    op: &'static str,
}

impl Reply {
    pub(crate) fn new(op: &'static str) -> Reply {
        Reply { op }
    }

    pub(crate) fn bad(&self, detail: impl Into<String>) -> Error {
        Error::Protocol {
            operation: self.op,
            detail: detail.into(),
        }
    }

    pub(crate) fn array(&self, v: Value) -> Result<Vec<Value>> {
        match v {
            Value::Array(items) => Ok(items),
            other => Err(self.bad(format!("expected an array, got {:?}", other.kind()))),
        }
    }

    /// Array with at least `n` items.
    pub(crate) fn array_min(&self, v: Value, n: usize) -> Result<Vec<Value>> {
        let items = self.array(v)?;
        if items.len() < n {
            return Err(self.bad(format!("expected at least {n} items, got {}", items.len())));
        }
        Ok(items)
    }

    pub(crate) fn int(&self, v: &Value) -> Result<i64> {
        match v {
            Value::Integer(i) => Ok(*i),
            Value::Double(d) if d.fract() == 0.0 && d.abs() < 9.0e15 => Ok(*d as i64),
            Value::String(s) => s
                .parse()
                .map_err(|_| self.bad(format!("expected an integer, got {s:?}"))),
            Value::Bytes(b) => std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| self.bad("expected an integer, got bytes")),
            other => Err(self.bad(format!("expected an integer, got {:?}", other.kind()))),
        }
    }

    /// A non-negative integer.
    pub(crate) fn uint(&self, v: &Value) -> Result<u64> {
        let i = self.int(v)?;
        u64::try_from(i).map_err(|_| self.bad(format!("expected a non-negative integer, got {i}")))
    }

    pub(crate) fn string(&self, v: &Value) -> Result<String> {
        match v {
            Value::String(s) => Ok(s.to_string()),
            Value::Bytes(b) => String::from_utf8(b.to_vec()).map_err(|_| self.bad("invalid UTF-8")),
            Value::Integer(i) => Ok(i.to_string()),
            Value::Null => Ok(String::new()),
            other => Err(self.bad(format!("expected a string, got {:?}", other.kind()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_checked() {
        let r = Reply::new("test");
        assert!(r.array(Value::Null).is_err());
        assert!(r.array_min(Value::Array(vec![]), 1).is_err());
        assert_eq!(r.int(&Value::String("42".into())).unwrap(), 42);
        assert!(r.int(&Value::String("x".into())).is_err());
        assert!(r.uint(&Value::Integer(-1)).is_err());
        assert_eq!(r.int(&Value::Double(3.0)).unwrap(), 3);
        assert!(r.int(&Value::Double(3.5)).is_err());
        assert_eq!(r.string(&Value::Integer(7)).unwrap(), "7");
        assert!(r.string(&Value::Array(vec![])).is_err());
    }
}
