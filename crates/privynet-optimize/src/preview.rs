//! First rows of any Parquet or Arrow IPC artifact, rendered by polars (what a user sees when
//! they open the file with polars themselves), in blocks of at most 6 columns and 10 rows so
//! that polars' own display limits never hide a column.

use std::fs::File;
use std::path::Path;

use polars::prelude::*;

use crate::{OptimizeError, io_error, polars_error};

const COLS: usize = 6;
const ROWS: usize = 10;

/// Reads the first `rows` rows of `path` (`.parquet`, or Arrow IPC otherwise) with polars.
pub fn first_rows(path: &Path, rows: usize) -> Result<DataFrame, OptimizeError> {
    let file = File::open(path).map_err(io_error(path))?;
    if path.extension().is_some_and(|e| e == "parquet") {
        ParquetReader::new(file)
            .with_slice(Some((0, rows)))
            .finish()
            .map_err(polars_error(path))
    } else {
        IpcReader::new(file)
            .with_n_rows(Some(rows))
            .finish()
            .map_err(polars_error(path))
    }
}

/// Renders a frame in blocks of columns and rows that polars prints whole.
pub fn render(df: &DataFrame) -> String {
    let mut out = String::new();
    let names: Vec<PlSmallStr> = df.get_column_names_owned();
    for cols in names.chunks(COLS) {
        let part = df.select(cols.iter().cloned()).expect("the columns exist");
        let mut start = 0;
        loop {
            let block = part.slice(start as i64, ROWS);
            out.push_str(&format!("{block}\n"));
            start += ROWS;
            if start >= part.height() {
                break;
            }
        }
    }
    out
}

/// The first `rows` rows of an artifact, rendered.
pub fn preview(path: &Path, rows: usize) -> Result<String, OptimizeError> {
    Ok(render(&first_rows(path, rows)?))
}
