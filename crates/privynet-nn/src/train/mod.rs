//! The train stage: the cloud network and its training on the cloud's features (or, for the
//! no-privacy baseline, the raw images), with the state a stopped run continues from and the
//! files a run writes, under `privynet-train`.

pub mod cloud;
pub mod export;
pub mod fit;
pub mod output;
pub mod report;
pub mod resume;
pub mod run;
