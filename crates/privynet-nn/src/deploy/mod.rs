//! The deploy stage: the optimizer's choice made into the two halves a user runs, local.onnx
//! (the sliced local network with its secret selection, as the slicer wrote it) and cloud.onnx
//! (the trained cloud network, exported by `train::export`), with the deployment card that
//! says what they were measured to do (`privynet_core::card`), under `privynet-deploy`.

pub mod run;
