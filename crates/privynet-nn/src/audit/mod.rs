//! The attack stage: the privacy audit of one topology and its attacker families (the IRN
//! trained to convergence, the optimisation attack through the local network rebuilt in burn,
//! the channel matching of the matched-selection attacker) and the Fisher-information bound of
//! a noisy defence, with the files it writes, under `privynet-attack`.

pub mod assess;
pub mod attack;
pub mod dfil;
pub mod invert;
pub mod irn;
pub mod local_net;
pub mod matching;
pub mod output;
pub mod run;
