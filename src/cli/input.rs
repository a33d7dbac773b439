//! Reading JSON documents for `sign` and `verify`: one document, pretty
//! printed or not, or JSON lines of them.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

use serde_json::value::RawValue;

/// Exit code for input that is not a document (sysexits EX_DATAERR).
pub const EXIT_DATA: u8 = 65;
/// Exit code for an input file that cannot be read (sysexits EX_NOINPUT).
pub const EXIT_NO_INPUT: u8 = 66;

/// A file to read, or standard input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Standard input, written `-`.
    Stdin,
    /// A file.
    File(PathBuf),
}

impl FromStr for Input {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(if text == "-" {
            Self::Stdin
        } else {
            Self::File(text.into())
        })
    }
}

impl std::fmt::Display for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stdin => f.write_str("standard input"),
            Self::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Reads the documents of `input` with the line number each starts on.
///
/// Input that is one JSON value is one document, however many lines it
/// spans. Otherwise every non-blank line is a document. On failure the
/// error is printed and the exit code returned.
pub fn read_documents(input: &Input) -> Result<Vec<(usize, String)>, ExitCode> {
    let mut text = String::new();
    let read = match input {
        Input::Stdin => std::io::stdin().read_to_string(&mut text).map(|_| ()),
        Input::File(path) => std::fs::read_to_string(path).map(|t| text = t),
    };
    if let Err(error) = read {
        if error.kind() == std::io::ErrorKind::InvalidData {
            stderr_line!("error: {input} is not UTF-8 text");
            return Err(ExitCode::from(EXIT_DATA));
        }
        stderr_line!("error: cannot read {input}: {error}");
        return Err(ExitCode::from(EXIT_NO_INPUT));
    }
    let documents = split_documents(&text);
    if documents.is_empty() {
        stderr_line!("error: {input} contains no JSON documents");
        return Err(ExitCode::from(EXIT_DATA));
    }
    Ok(documents)
}

fn split_documents(text: &str) -> Vec<(usize, String)> {
    if serde_json::from_str::<&RawValue>(text).is_ok() {
        let first = text.lines().position(|l| !l.trim().is_empty()).unwrap_or(0);
        return vec![(first + 1, text.trim().to_owned())];
    }
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| (i + 1, line.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_document_or_json_lines() {
        assert_eq!(
            split_documents("\n{\n  \"a\": 1\n}\n"),
            vec![(2, "{\n  \"a\": 1\n}".to_owned())]
        );
        assert_eq!(
            split_documents("{\"a\": 1}\n\n{\"b\": 2}\nnot json\n"),
            vec![
                (1, "{\"a\": 1}".to_owned()),
                (3, "{\"b\": 2}".to_owned()),
                (4, "not json".to_owned())
            ]
        );
        assert!(split_documents(" \n\n").is_empty());
    }
}
