//! Values crossing the SQL boundary, the same for both backends.

use super::StorageError;

/// A parameter or a column value.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Null,
    I64(i64),
    Bool(bool),
    Text(String),
}

impl From<&str> for Val {
    fn from(s: &str) -> Val {
        Val::Text(s.to_string())
    }
}

impl From<String> for Val {
    fn from(s: String) -> Val {
        Val::Text(s)
    }
}

impl From<&String> for Val {
    fn from(s: &String) -> Val {
        Val::Text(s.clone())
    }
}

impl From<i64> for Val {
    fn from(v: i64) -> Val {
        Val::I64(v)
    }
}

impl From<bool> for Val {
    fn from(v: bool) -> Val {
        Val::Bool(v)
    }
}

impl<T: Into<Val>> From<Option<T>> for Val {
    fn from(v: Option<T>) -> Val {
        v.map_or(Val::Null, Into::into)
    }
}

/// One result row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(pub Vec<Val>);

impl Row {
    fn at(&self, i: usize) -> Result<&Val, StorageError> {
        self.0
            .get(i)
            .ok_or_else(|| StorageError::Internal(format!("column {i} out of range")))
    }

    pub fn string(&self, i: usize) -> Result<String, StorageError> {
        match self.at(i)? {
            Val::Text(s) => Ok(s.clone()),
            other => Err(StorageError::Internal(format!(
                "column {i}: expected text, got {other:?}"
            ))),
        }
    }

    pub fn opt_string(&self, i: usize) -> Result<Option<String>, StorageError> {
        match self.at(i)? {
            Val::Null => Ok(None),
            _ => self.string(i).map(Some),
        }
    }

    pub fn i64(&self, i: usize) -> Result<i64, StorageError> {
        match self.at(i)? {
            Val::I64(v) => Ok(*v),
            Val::Bool(b) => Ok(i64::from(*b)),
            other => Err(StorageError::Internal(format!(
                "column {i}: expected integer, got {other:?}"
            ))),
        }
    }

    pub fn opt_i64(&self, i: usize) -> Result<Option<i64>, StorageError> {
        match self.at(i)? {
            Val::Null => Ok(None),
            _ => self.i64(i).map(Some),
        }
    }

    pub fn bool(&self, i: usize) -> Result<bool, StorageError> {
        match self.at(i)? {
            Val::Bool(b) => Ok(*b),
            Val::I64(v) => Ok(*v != 0),
            other => Err(StorageError::Internal(format!(
                "column {i}: expected boolean, got {other:?}"
            ))),
        }
    }
}
