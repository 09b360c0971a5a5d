//! The privacy audit of one topology as a library: under each knowledge mode, the attacker
//! trains an IRN on its own pool until it converges and rebuilds the victims' images, then
//! (the optimisation family) refines them through the public local network; every mean carries
//! a 95% bootstrap interval over the victims, and the worst attack over modes and families is
//! the topology's reported privacy loss. The attack stage (`audit::run`, under
//! `privynet-attack`) loads the files, calls [`run`] and writes what the `audit::output` module
//! makes of the result (that module imports this one, never the other way round).

use std::collections::HashMap;
use std::time::Instant;

use rand::SeedableRng;
use rand::seq::SliceRandom;

use burn::tensor::Device;
use privynet_core::defence::{ChannelStats, Encoding, SECRET_LEN, image_rng};
use privynet_core::manifest::{AttackFamily, AttackMode, AttackParams};

use super::attack::{EpochRecord, Pool, Standardizer, Training, take_channels, train_irn};
use super::invert::{Inverter, likelihood_weights, mean_image};
use super::local_net::{LocalNet, Preprocessing};
use super::matching;
use crate::NnError;
use crate::data::Split;
use crate::metrics::{self, Interval};

/// Salt of the unknown-selection attacker's guess, so it is not the slice stage's own draw.
const GUESS_SALT: u64 = 0x5eed_a77a;

/// Rows of a split and, for each, the image of the same id: features and images in one order.
#[derive(Debug, Clone, Default)]
pub struct Aligned {
    pub ids: Vec<i64>,
    pub x: Vec<f32>,
    pub y: Vec<f32>,
}

impl Aligned {
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// The first `limit` rows of `feat` (rows of `feature_len` values) with the rows of `images`
/// (rows of `image_len` values) of the same ids. A feature row whose id has no image is an error.
pub fn align(
    feat: &Split,
    feature_len: usize,
    images: &Split,
    image_len: usize,
    limit: Option<usize>,
) -> Result<Aligned, String> {
    let pos: HashMap<i64, usize> = images
        .ids
        .iter()
        .enumerate()
        .map(|(i, id)| (*id, i))
        .collect();
    let n = limit.map_or(feat.len(), |l| l.min(feat.len()));
    let mut out = Aligned {
        ids: Vec::with_capacity(n),
        x: Vec::with_capacity(n * feature_len),
        y: Vec::with_capacity(n * image_len),
    };
    for i in 0..n {
        let id = feat.ids[i];
        let j = *pos
            .get(&id)
            .ok_or_else(|| format!("features row id {id} has no image"))?;
        out.ids.push(id);
        out.x
            .extend_from_slice(&feat.x[i * feature_len..(i + 1) * feature_len]);
        out.y
            .extend_from_slice(&images.x[j * image_len..(j + 1) * image_len]);
    }
    Ok(out)
}

/// Puts all-channel feature rows stored in selection order `perm` back in the pretrained
/// network's channel order. `perm` must be a permutation of `0..c`.
pub fn natural_order(x: &[f32], c: usize, hw: usize, perm: &[usize]) -> Result<Vec<f32>, String> {
    let mut sorted = perm.to_vec();
    sorted.sort_unstable();
    if sorted != (0..c).collect::<Vec<_>>() {
        return Err(format!("not a permutation of the cut's {c} channels"));
    }
    let mut natural = vec![0f32; x.len()];
    for (src_row, dst_row) in x.chunks_exact(c * hw).zip(natural.chunks_exact_mut(c * hw)) {
        for (pos, &ch) in perm.iter().enumerate() {
            dst_row[ch * hw..(ch + 1) * hw].copy_from_slice(&src_row[pos * hw..(pos + 1) * hw]);
        }
    }
    Ok(natural)
}

/// What the audit works on.
#[derive(Debug, Clone, Copy)]
pub struct AuditInput<'a> {
    pub params: &'a AttackParams,
    pub seed: u64,
    /// The cut's full channel count (sets the IRN's width).
    pub cut_channels: usize,
    /// Feature shape [D, h, w] of the topology.
    pub feature_shape: [usize; 3],
    pub image_size: usize,
    /// The true selection (D channel indices of the cut), to score the matching attacker.
    pub selection: &'a [usize],
    /// The attacker's pool at the true selection, with its images.
    pub pool: &'a Aligned,
    /// The victims' features as the cloud receives them, and their originals.
    pub victims: &'a Aligned,
    /// The pool's all-channel features in the pretrained network's order, for the modes that
    /// do not know the selection.
    pub full_pool: Option<&'a [f32]>,
    /// The public local network, for the optimisation family and the feature errors.
    pub local: Option<LocalAttack<'a>>,
}

/// The defence of the received features as the attacker knows it (Kerckhoffs): their encoding
/// (from the features' metadata), and the attacker's own noise generator, never the user's
/// secret. The modes that compute their own guess features defend them with it, so that the
/// IRN trains on features distributed like the received ones.
#[derive(Debug, Clone, Copy)]
pub struct KnownDefence<'a> {
    pub encoding: &'a Encoding,
    /// The attacker's key for [`image_rng`] (see [`attacker_key`]).
    pub key: [u8; SECRET_LEN],
    /// The topology's label, keying each row's draw with its image id.
    pub label: &'a str,
}

/// The attacker's own noise key: the blake3 hash of the run's seed and the word `attacker`.
/// Public and reproducible; it has nothing of the user's secret.
pub fn attacker_key(seed: u64) -> [u8; SECRET_LEN] {
    let mut bytes = seed.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"attacker");
    let hex = privynet_core::hash::hash_bytes(&bytes);
    std::array::from_fn(|i| {
        u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("a blake3 digest is hex")
    })
}

/// The local network as the optimisation attacker holds it.
#[derive(Debug, Clone, Copy)]
pub struct LocalAttack<'a> {
    /// The topology's local network on `device` (an autodiff device), its own selection last.
    pub net: &'a LocalNet,
    pub preprocessing: &'a Preprocessing,
    pub device: &'a Device,
}

/// One attacker's result: a family under a knowledge mode.
#[derive(Debug, Clone)]
pub struct AttackResult {
    pub mode: AttackMode,
    pub family: AttackFamily,
    /// Reconstructions of the victims ([n, 3, size, size] flat).
    pub recon: Vec<f32>,
    pub psnr: Vec<f64>,
    pub ssim: Vec<f64>,
    pub mse: Vec<f64>,
    /// How far the local network's features of each reconstruction are from the received ones
    /// (standardised per channel): what the attacker itself can measure. With the local
    /// network only.
    pub feature_error: Option<Vec<f64>>,
    pub psnr_interval: Interval,
    pub ssim_interval: Interval,
    /// For matched-selection: received channels matched to the right pretrained channel.
    pub matched: Option<i64>,
    /// The IRN of this mode (for the optimisation family: the one whose reconstructions it
    /// started from).
    pub training: Training,
    /// Optimisation steps per start (the optimisation family only).
    pub iterations: Option<usize>,
    pub seconds: f64,
}

impl AttackResult {
    pub fn mean_psnr(&self) -> f64 {
        metrics::mean_capped_psnr(&self.psnr)
    }
    pub fn mean_ssim(&self) -> f64 {
        metrics::mean(&self.ssim)
    }
    /// The mode's first word and the family (`known irn`, `matched optimization`): how the
    /// picture labels a row.
    pub fn label(&self) -> String {
        let mode = self.mode.name().split('-').next().unwrap_or_default();
        format!("{mode} {}", self.family.name())
    }
}

/// The whole audit.
#[derive(Debug, Clone)]
pub struct Audit {
    /// One per mode and family, the IRN of a mode first.
    pub attacks: Vec<AttackResult>,
    /// Mean PSNR and SSIM of answering every victim with the pool's mean image.
    pub floor_psnr: f64,
    pub floor_ssim: f64,
}

impl Audit {
    /// Index of the attack with the highest mean PSNR: the topology's reported privacy loss.
    pub fn worst(&self) -> Option<usize> {
        self.attacks
            .iter()
            .map(AttackResult::mean_psnr)
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i)
    }
}

/// An IRN already trained in this audit: its training features, reconstructions and curve.
struct Trained {
    mode: AttackMode,
    train_x: Vec<f32>,
    recon: Vec<f32>,
    training: Training,
}

/// The features a mode's attacker trains on, and how it believes the local network ends.
struct ModeView {
    /// The pool's feature rows as this attacker computes them.
    train_x: Vec<f32>,
    /// For matched-selection: how many channels it matched right.
    matched: Option<i64>,
    /// The cut's channels the attacker believes were kept (None: it knows the selection).
    channels: Option<Vec<usize>>,
}

/// Runs every mode of `input.params.modes`, each with every family of `params.families`.
/// `on_epoch` sees each IRN epoch with its mode.
pub fn run(
    input: AuditInput<'_>,
    on_epoch: impl FnMut(AttackMode, &EpochRecord),
) -> Result<Audit, NnError> {
    run_with_defence(input, None, on_epoch)
}

/// [`run`] on defended features: the attacker knows `defence` (none: [`run`] as it is).
pub fn run_with_defence(
    input: AuditInput<'_>,
    defence: Option<KnownDefence<'_>>,
    mut on_epoch: impl FnMut(AttackMode, &EpochRecord),
) -> Result<Audit, NnError> {
    let defence = defence.filter(|d| !d.encoding.defence.is_none());
    let params = input.params;
    let (floor_psnr, floor_ssim) = floor(&input.pool.y, &input.victims.y, input.image_size);
    let optimize = params.families.contains(&AttackFamily::Optimization);
    if optimize && input.local.is_none() {
        return Err(NnError::Input(
            "the optimization family needs the local network (--local-network)".into(),
        ));
    }
    let mut attacks = Vec::new();
    let mut trained: Vec<Trained> = Vec::new();
    for &mode in &params.modes {
        let started = Instant::now();
        let view = mode_view(mode, &input, defence)?;
        let (recon, training) = irn_for(mode, &view, &input, &mut trained, &mut on_epoch)?;
        let mode_net = input
            .local
            .map(|local| mode_network(local, &view, &input, defence))
            .transpose()?;
        let inverter = input
            .local
            .zip(mode_net.as_ref())
            .map(|(local, m)| inverter_for(&input, local, m));
        let feature_error = inverter
            .as_ref()
            .map(|inv| inv.feature_error(&recon, &input.victims.x));
        let irn = scored(
            &input,
            Attempt {
                mode,
                family: AttackFamily::Irn,
                recon,
                feature_error,
                matched: view.matched,
                training,
                iterations: None,
                started,
            },
        );
        let refined = match (optimize, &inverter) {
            (true, Some(inv)) => Some(optimized(&input, inv, &irn)),
            _ => None,
        };
        attacks.push(irn);
        attacks.extend(refined);
    }
    Ok(Audit {
        attacks,
        floor_psnr,
        floor_ssim,
    })
}

/// The IRN of a mode: trained on its pairs, or taken from an earlier mode that trained on the
/// very same pairs. Training is deterministic in (pairs, seed), so a mode whose pairs are bit for
/// bit those of a mode already run (the matching attacker that found every channel in order)
/// would train the same network again.
fn irn_for(
    mode: AttackMode,
    view: &ModeView,
    input: &AuditInput<'_>,
    trained: &mut Vec<Trained>,
    on_epoch: &mut impl FnMut(AttackMode, &EpochRecord),
) -> Result<(Vec<f32>, Training), NnError> {
    if let Some(same) = trained.iter().find(|t| t.train_x == view.train_x) {
        tracing::info!(
            mode = mode.name(),
            same_as = same.mode.name(),
            "same training pairs as an earlier mode: its reconstructions stand for this one"
        );
        return Ok((same.recon.clone(), same.training.clone()));
    }
    let pool = Pool {
        x: &view.train_x,
        feature_shape: input.feature_shape,
        y: &input.pool.y,
        size: input.image_size,
    };
    let attacker = train_irn(input.params, input.seed, input.cut_channels, pool, |r| {
        on_epoch(mode, r)
    })?;
    let recon = attacker.reconstruct(&input.victims.x, 256);
    let training = attacker.training.clone();
    trained.push(Trained {
        mode,
        train_x: view.train_x.clone(),
        recon: recon.clone(),
        training: training.clone(),
    });
    Ok((recon, training))
}

/// The local network as a mode's attacker believes it ends, and its feature scales.
struct ModeNetwork {
    net: LocalNet,
    inv_std: Vec<f32>,
}

fn mode_network(
    local: LocalAttack<'_>,
    view: &ModeView,
    input: &AuditInput<'_>,
    defence: Option<KnownDefence<'_>>,
) -> Result<ModeNetwork, NnError> {
    let net = match &view.channels {
        Some(channels) => local.net.with_output_channels(channels)?,
        None => local.net.clone(),
    };
    let [d, h, w] = input.feature_shape;
    let mut inv_std = Standardizer::fit(&view.train_x, d, h * w)
        .inv_std()
        .to_vec();
    // Under a defence the error becomes the noise's likelihood; without one it is untouched.
    if let Some(weights) = defence.and_then(|k| likelihood_weights(k.encoding, &inv_std)) {
        for (s, w) in inv_std.iter_mut().zip(weights) {
            *s *= w.sqrt();
        }
    }
    Ok(ModeNetwork { net, inv_std })
}

fn inverter_for<'a>(
    input: &AuditInput<'a>,
    local: LocalAttack<'a>,
    m: &'a ModeNetwork,
) -> Inverter<'a> {
    Inverter {
        net: &m.net,
        preprocessing: local.preprocessing,
        inv_std: &m.inv_std,
        params: &input.params.optimization,
        device: local.device,
        feature_shape: input.feature_shape,
        size: input.image_size,
    }
}

/// The optimisation family under a mode: every victim refined from the IRN's reconstruction
/// and from the pool's mean image, the lower feature error kept.
fn optimized(input: &AuditInput<'_>, inv: &Inverter<'_>, irn: &AttackResult) -> AttackResult {
    let started = Instant::now();
    let n = input.victims.len();
    let out = inv.refine(&input.victims.x, &irn.recon, &input.pool.y, |done| {
        tracing::info!(
            mode = irn.mode.name(),
            done,
            of = n,
            seconds = format!("{:.1}", started.elapsed().as_secs_f64()),
            "optimisation attack"
        );
    });
    let from_mean = out.start.iter().filter(|&&k| k == 1).count();
    tracing::info!(
        mode = irn.mode.name(),
        from_irn = n - from_mean,
        from_mean,
        "kept the lower feature error per victim"
    );
    scored(
        input,
        Attempt {
            mode: irn.mode,
            family: AttackFamily::Optimization,
            recon: out.recon,
            feature_error: Some(out.feature_error),
            matched: irn.matched,
            training: irn.training.clone(),
            iterations: Some(input.params.optimization.iterations),
            started,
        },
    )
}

/// An attack's reconstructions, before they are scored.
struct Attempt {
    mode: AttackMode,
    family: AttackFamily,
    recon: Vec<f32>,
    feature_error: Option<Vec<f64>>,
    matched: Option<i64>,
    training: Training,
    iterations: Option<usize>,
    started: Instant,
}

/// Scores reconstructions against the victims' originals, with intervals.
fn scored(input: &AuditInput<'_>, a: Attempt) -> AttackResult {
    let (psnr, ssim, mse) = per_victim(&input.victims.y, &a.recon, input.image_size);
    let boot = |v: &[f64]| metrics::bootstrap_mean(v, input.params.bootstrap, input.seed);
    AttackResult {
        mode: a.mode,
        family: a.family,
        psnr_interval: boot(&psnr),
        ssim_interval: boot(&ssim),
        recon: a.recon,
        psnr,
        ssim,
        mse,
        feature_error: a.feature_error,
        matched: a.matched,
        training: a.training,
        iterations: a.iterations,
        seconds: a.started.elapsed().as_secs_f64(),
    }
}

/// PSNR, SSIM and MSE of each reconstruction against its original.
fn per_victim(originals: &[f32], recon: &[f32], size: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let image_len = 3 * size * size;
    let (mut psnr, mut ssim, mut mse) = (Vec::new(), Vec::new(), Vec::new());
    for (a, b) in originals
        .chunks_exact(image_len)
        .zip(recon.chunks_exact(image_len))
    {
        psnr.push(metrics::psnr(a, b));
        ssim.push(metrics::ssim(a, b, 3, size, size));
        mse.push(metrics::mse(a, b));
    }
    (psnr, ssim, mse)
}

/// What a mode's attacker trains on (the pool's rows as it would compute them, defended as the
/// received ones are) and which channels it believes were kept; for matched-selection, how
/// many it matched right.
fn mode_view(
    mode: AttackMode,
    input: &AuditInput<'_>,
    defence: Option<KnownDefence<'_>>,
) -> Result<ModeView, NnError> {
    let [d, h, w] = input.feature_shape;
    let hw = h * w;
    let c = input.cut_channels;
    let full = || {
        input.full_pool.ok_or_else(|| {
            NnError::Training(format!(
                "{} needs the cut's all-channel features of the attacker pool",
                mode.name()
            ))
        })
    };
    let n_pool = input.pool.len();
    Ok(match mode {
        AttackMode::KnownSelection => ModeView {
            train_x: input.pool.x.clone(),
            matched: None,
            channels: None,
        },
        AttackMode::UnknownSelection => {
            // The attacker's own guess of D channels: a random draw it cannot check.
            let mut guess: Vec<usize> = (0..c).collect();
            guess.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(
                input.seed ^ GUESS_SALT,
            ));
            guess.truncate(d);
            let mut train_x = take_channels(full()?, n_pool, c, hw, &guess);
            defend_guesses(&mut train_x, &input.pool.ids, hw, defence);
            ModeView {
                train_x,
                matched: None,
                channels: Some(guess),
            }
        }
        AttackMode::MatchedSelection => {
            let full_x = full()?;
            // Like with like: the received channels are defended, so the pool's are too.
            let pool_sig = match defence {
                Some(k) => {
                    let defended = defend_like_the_user(full_x, &input.pool.ids, c, hw, k);
                    matching::signatures(&defended, n_pool, c, hw)
                }
                None => matching::signatures(full_x, n_pool, c, hw),
            };
            let recv_sig = matching::signatures(&input.victims.x, input.victims.len(), d, hw);
            let matched = matching::match_channels(&pool_sig, &recv_sig);
            let right = matched
                .iter()
                .zip(input.selection)
                .filter(|(a, b)| a == b)
                .count();
            tracing::info!(
                right,
                of = d,
                "matched received channels to pretrained channels"
            );
            let mut train_x = take_channels(full_x, n_pool, c, hw, &matched);
            defend_guesses(&mut train_x, &input.pool.ids, hw, defence);
            ModeView {
                train_x,
                matched: Some(right as i64),
                channels: Some(matched),
            }
        }
    })
}

/// Defends the attacker's guess rows (in the received channels' order, one per id of `ids`)
/// with the received features' encoding and the attacker's own generator.
fn defend_guesses(x: &mut [f32], ids: &[i64], hw: usize, defence: Option<KnownDefence<'_>>) {
    let Some(k) = defence else { return };
    let row_len = x.len() / ids.len().max(1);
    for (row, id) in x.chunks_exact_mut(row_len.max(1)).zip(ids) {
        let mut rng = image_rng(&k.key, &format!("{}/guess", k.label), *id);
        k.encoding.apply(row, hw, &mut rng);
    }
}

/// The pool's all-channel rows defended as the user's defend stage would defend them (the
/// encoding does not cover channels the user did not send): the noise a fraction of each
/// channel's std over the pool, then codes fitted to the noisy pool's range, with the
/// attacker's own generator. What the matching attacker's signatures compare with the
/// received (defended) channels.
fn defend_like_the_user(
    full: &[f32],
    ids: &[i64],
    c: usize,
    hw: usize,
    k: KnownDefence<'_>,
) -> Vec<f32> {
    let stats = |x: &[f32]| {
        let mut s = ChannelStats::new(c, hw);
        x.chunks_exact(c * hw).for_each(|r| s.add(r));
        s
    };
    let mut own = Encoding::with_noise(k.encoding.defence, &stats(full));
    let mut x = full.to_vec();
    for (row, id) in x.chunks_exact_mut(c * hw).zip(ids) {
        own.add_noise(
            row,
            hw,
            &mut image_rng(&k.key, &format!("{}/match", k.label), *id),
        );
    }
    if own.defence.quantised() {
        own.fit_quantisation(&stats(&x));
        let mut codes = Vec::with_capacity(x.len());
        for row in x.chunks_exact(c * hw) {
            own.quantise(row, hw, &mut codes);
        }
        x.clear();
        own.dequantise(&codes, hw, &mut x);
    }
    x
}

/// The trivial attacker: answer every victim with the pool's mean image.
fn floor(pool_y: &[f32], victims_y: &[f32], size: usize) -> (f64, f64) {
    let image_len = 3 * size * size;
    let mean_img = mean_image(pool_y, size);
    let n = (victims_y.len() / image_len).max(1) as f64;
    victims_y
        .chunks_exact(image_len)
        .fold((0.0, 0.0), |(p, s), row| {
            (
                p + metrics::psnr(row, &mean_img).min(metrics::PSNR_CAP) / n,
                s + metrics::ssim(row, &mean_img, 3, size, size) / n,
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attackers_key_is_its_own_and_repeats() {
        assert_eq!(attacker_key(7), attacker_key(7));
        assert_ne!(attacker_key(7), attacker_key(8));
    }

    /// `n` samples of six channels of distinct statistics and spatial maps, `hw` values each.
    fn six_channels(n: usize, hw: usize) -> Vec<f32> {
        (0..n * 6 * hw)
            .map(|i| {
                let (ch, s, p) = ((i / hw) % 6, i / (6 * hw), i % hw);
                let map = 1.0 + ((ch * 3 + p * 5) % 7) as f32 * 0.5;
                let sample = ((s * 7 + p) % 5) as f32 * 0.3 + 0.2;
                ((ch as f32 + 1.0) * 0.5 * map * sample - ch as f32 * 0.2).max(0.0)
            })
            .collect()
    }

    /// Rows of 3 channels defended as the defend stage does (noise at half each channel's std
    /// from the user's secret, 8-bit codes fitted to the noisy rows): the encoding and what
    /// the cloud receives.
    fn defended_by_the_user(sent: &[f32], ids: &[i64], hw: usize) -> (Encoding, Vec<f32>) {
        use privynet_core::defence::Defence;
        let stats = |x: &[f32]| {
            let mut s = ChannelStats::new(3, hw);
            x.chunks_exact(3 * hw).for_each(|r| s.add(r));
            s
        };
        let mut encoding = Encoding::with_noise(Defence::new(0.5, 8).unwrap(), &stats(sent));
        let mut noisy = sent.to_vec();
        for (row, id) in noisy.chunks_exact_mut(3 * hw).zip(ids) {
            encoding.add_noise(row, hw, &mut image_rng(&[9; SECRET_LEN], "user", *id));
        }
        encoding.fit_quantisation(&stats(&noisy));
        let mut codes = vec![];
        for r in noisy.chunks_exact(3 * hw) {
            encoding.quantise(r, hw, &mut codes);
        }
        let mut received = vec![];
        encoding.dequantise(&codes, hw, &mut received);
        (encoding, received)
    }

    /// The user sends channels 4, 1, 5 defended. Defended like the received ones, the
    /// attacker's pool channels are matched to them (undefended, one is missed); guess rows get
    /// the received features' encoding with the attacker's own draws.
    #[test]
    fn defended_channels_are_matched_like_with_like() {
        let (n, c, hw) = (400, 6, 4);
        let x = six_channels(n, hw);
        let ids: Vec<i64> = (0..n as i64).collect();
        let picked = [4usize, 1, 5];
        let sent = take_channels(&x, n, c, hw, &picked);
        let (encoding, received) = defended_by_the_user(&sent, &ids, hw);
        let k = KnownDefence {
            encoding: &encoding,
            key: attacker_key(1),
            label: "t",
        };
        let received_sig = matching::signatures(&received, n, 3, hw);
        let matched = |pool: &[f32]| {
            matching::match_channels(&matching::signatures(pool, n, c, hw), &received_sig)
        };
        assert_eq!(matched(&defend_like_the_user(&x, &ids, c, hw, k)), picked);
        assert_ne!(matched(&x), picked);

        let mut guess = sent.clone();
        defend_guesses(&mut guess, &ids, hw, Some(k));
        let mut want = sent[..3 * hw].to_vec();
        encoding.apply(&mut want, hw, &mut image_rng(&k.key, "t/guess", 0));
        assert_eq!(guess[..3 * hw], want[..]);
        assert_ne!(guess, received, "the attacker's draws are not the user's");
    }

    #[test]
    fn natural_order_undoes_the_selection_order() {
        // 1 row, 3 channels of 2 values, stored in order [2, 0, 1].
        let stored = [20.0, 21.0, 0.0, 1.0, 10.0, 11.0];
        let natural = natural_order(&stored, 3, 2, &[2, 0, 1]).expect("a permutation");
        assert_eq!(natural, vec![0.0, 1.0, 10.0, 11.0, 20.0, 21.0]);
        assert!(natural_order(&stored, 3, 2, &[2, 2, 1]).is_err());
    }

    #[test]
    fn align_pairs_features_with_images_by_id() {
        let feat = Split {
            ids: vec![7, 3],
            x: vec![0.7, 0.3],
            labels: vec![0, 0],
        };
        let images = Split {
            ids: vec![3, 7],
            x: vec![3.0, 3.0, 7.0, 7.0],
            labels: vec![0, 0],
        };
        let a = align(&feat, 1, &images, 2, None).expect("aligned");
        assert_eq!((a.ids, a.y), (vec![7, 3], vec![7.0, 7.0, 3.0, 3.0]));
        let missing = Split {
            ids: vec![9],
            x: vec![0.9],
            labels: vec![0],
        };
        assert!(align(&missing, 1, &images, 2, None).is_err());
    }
}
