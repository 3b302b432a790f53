//! PyO3 shell for `tokens`: converts Python values to JSON values and errors to exceptions.

use crate::tokens;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::{Map, Number, Value};
use std::borrow::Cow;

/// Inputs at least this large are counted with the GIL released: below it the detach/attach
/// round trip is a visible share of the call (a 1 KB prompt takes a few µs), above it other
/// Python threads gain the whole count (64 KB ≈ 100+ µs).
const GIL_RELEASE_MIN_BYTES: usize = 64 * 1024;
/// Deeper structures than this are not chat messages; refusing them keeps recursion bounded.
const MAX_DEPTH: usize = 64;

/// A prompt's token count: `tokens`, whether it is `exact` (the model's own tokenizer) or an
/// estimate, and the `encoding` that produced it.
#[pyclass(frozen, get_all, module = "llmgw._core")]
pub struct TokenCount {
    tokens: u64,
    exact: bool,
    encoding: String,
}

#[pymethods]
impl TokenCount {
    fn __repr__(&self) -> String {
        let exact = if self.exact { "True" } else { "False" };
        format!(
            "TokenCount(tokens={}, exact={exact}, encoding='{}')",
            self.tokens, self.encoding
        )
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other.cast::<TokenCount>().is_ok_and(|o| {
            let o = o.get();
            o.tokens == self.tokens && o.exact == self.exact && o.encoding == self.encoding
        })
    }

    fn __int__(&self) -> u64 {
        self.tokens
    }
}

#[pyfunction]
#[pyo3(signature = (text, model = "gpt-4o"))]
fn count_tokens(py: Python<'_>, text: &Bound<'_, PyString>, model: &str) -> PyResult<u64> {
    let text = utf8_of(text)?;
    Ok(if text.len() >= GIL_RELEASE_MIN_BYTES {
        py.detach(|| tokens::count_text_tokens(&text, model))
    } else {
        tokens::count_text_tokens(&text, model)
    })
}

/// The UTF-8 text of `s`. A str holding lone surrogates (which UTF-8 cannot carry) is first
/// cleaned as tiktoken cleans it — a UTF-16 round trip that pairs what it can and replaces the
/// rest with U+FFFD — so counts stay equal to tiktoken's there too.
fn utf8_of<'a>(s: &'a Bound<'_, PyString>) -> PyResult<Cow<'a, str>> {
    match s.to_str() {
        Ok(text) => Ok(Cow::Borrowed(text)),
        Err(_) => {
            let utf16 = s.call_method1("encode", ("utf-16", "surrogatepass"))?;
            let cleaned = utf16.call_method1("decode", ("utf-16", "replace"))?;
            Ok(Cow::Owned(cleaned.cast::<PyString>()?.to_str()?.to_owned()))
        }
    }
}

#[pyfunction]
#[pyo3(signature = (messages, model = "gpt-4o", tools = None))]
fn count_chat_tokens(
    py: Python<'_>,
    messages: &Bound<'_, PyAny>,
    model: &str,
    tools: Option<&Bound<'_, PyAny>>,
) -> PyResult<TokenCount> {
    let mut text_bytes = 0usize;
    let messages = json_list(messages, "messages", &mut text_bytes)?;
    let tools = tools
        .filter(|t| !t.is_none())
        .map(|t| json_list(t, "tools", &mut text_bytes))
        .transpose()?;
    let count = || tokens::count_chat_tokens(&messages, model, tools.as_deref());
    let result = if text_bytes >= GIL_RELEASE_MIN_BYTES {
        py.detach(count)
    } else {
        count()
    };
    let result = result.map_err(|e| PyTypeError::new_err(e.to_string()))?;
    Ok(TokenCount {
        tokens: result.tokens,
        exact: result.exact,
        encoding: result.encoding.as_str().to_owned(),
    })
}

#[pyfunction]
fn context_window(model: &str) -> Option<u32> {
    tokens::context_window(model)
}

fn json_list(obj: &Bound<'_, PyAny>, what: &str, text_bytes: &mut usize) -> PyResult<Vec<Value>> {
    let items: Vec<Bound<'_, PyAny>> = if let Ok(list) = obj.cast::<PyList>() {
        list.iter().collect()
    } else if let Ok(tuple) = obj.cast::<PyTuple>() {
        tuple.iter().collect()
    } else {
        let kind = obj.get_type().name()?;
        return Err(PyTypeError::new_err(format!(
            "{what} must be a list of dicts, not {kind}"
        )));
    };
    items
        .iter()
        .map(|item| to_json(item, 0, text_bytes))
        .collect()
}

fn to_json(obj: &Bound<'_, PyAny>, depth: usize, text_bytes: &mut usize) -> PyResult<Value> {
    if depth > MAX_DEPTH {
        return Err(PyValueError::new_err(format!(
            "messages nest deeper than {MAX_DEPTH} levels"
        )));
    }
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(s) = obj.cast::<PyString>() {
        let s = utf8_of(s)?;
        *text_bytes += s.len();
        return Ok(Value::String(s.into_owned()));
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if obj.cast::<PyInt>().is_ok() {
        return Ok(match obj.extract::<i64>() {
            Ok(i) => Value::from(i),
            Err(_) => Value::Number(
                obj.str()?
                    .to_str()?
                    .parse::<Number>()
                    .unwrap_or_else(|_| Number::from(0)),
            ),
        });
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return Ok(Number::from_f64(f.value()).map_or(Value::Null, Value::Number));
    }
    if let Ok(dict) = obj.cast::<PyDict>() {
        let mut map = Map::new();
        for (key, value) in dict.iter() {
            let key = key
                .cast::<PyString>()
                .map_err(|_| PyTypeError::new_err("message keys must be strings"))?
                .to_str()?
                .to_owned();
            map.insert(key, to_json(&value, depth + 1, text_bytes)?);
        }
        return Ok(Value::Object(map));
    }
    if obj.cast::<PyList>().is_ok() || obj.cast::<PyTuple>().is_ok() {
        let items: PyResult<Vec<Value>> = obj
            .try_iter()?
            .map(|item| to_json(&item?, depth + 1, text_bytes))
            .collect();
        return Ok(Value::Array(items?));
    }
    let kind = obj.get_type().name()?;
    Err(PyTypeError::new_err(format!(
        "cannot count tokens of a {kind} value in a message"
    )))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<TokenCount>()?;
    m.add_function(wrap_pyfunction!(count_tokens, m)?)?;
    m.add_function(wrap_pyfunction!(count_chat_tokens, m)?)?;
    m.add_function(wrap_pyfunction!(context_window, m)?)?;
    Ok(())
}
