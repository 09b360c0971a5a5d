//! Channel-count grids: the sweep resolved against a cut, and the optimizer's sampled points.

use super::{ChannelCount, SamplePoint, SampleRule};

/// A cut's grid of channel counts: the sweep's counts resolved against the cut, sorted and
/// deduplicated. A count larger than the cut's channels is an error naming both.
pub fn grid_channels(
    channels: &[ChannelCount],
    cut: &str,
    cut_channels: i64,
) -> std::result::Result<Vec<i64>, String> {
    let mut ds = Vec::with_capacity(channels.len());
    for c in channels {
        let d = match c {
            ChannelCount::Count(d) => i64::from(*d),
            ChannelCount::All(_) => cut_channels,
        };
        if d > cut_channels {
            return Err(format!(
                "sweep asks for {d} channels at `{cut}`, which has {cut_channels} channels"
            ));
        }
        ds.push(d);
    }
    ds.sort_unstable();
    ds.dedup();
    Ok(ds)
}

/// The sampled channel counts of one cut's grid (sorted, deduplicated).
pub fn sample_channels(grid: &[i64], cut_channels: i64, sample: &[SamplePoint]) -> Vec<i64> {
    let mut out = Vec::new();
    if grid.is_empty() {
        return out;
    }
    for s in sample {
        let d = match s {
            SamplePoint::Count(d) => Some(i64::from(*d)).filter(|d| grid.contains(d)),
            SamplePoint::Rule(SampleRule::Smallest) => grid.first().copied(),
            SamplePoint::Rule(SampleRule::Middle) => Some(grid[(grid.len() - 1) / 2]),
            SamplePoint::Rule(SampleRule::Largest) => grid.last().copied(),
            SamplePoint::Rule(SampleRule::All) => Some(cut_channels).filter(|d| grid.contains(d)),
        };
        out.extend(d);
    }
    out.sort_unstable();
    out.dedup();
    out
}
