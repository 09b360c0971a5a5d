//! Seeded, stratified split assignment. Each split takes from every class in proportion to the
//! class's share of its pool (largest remainder), so a small run keeps the class balance.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use privynet_core::manifest::{ImageCount, SplitSizes};

use crate::{Dataset, IngestError, Record};

/// Images assigned to splits, each list sorted by id.
#[derive(Debug, Default)]
pub struct Splits {
    pub train: Vec<Record>,
    /// Validation images: the cloud network is scored and the optimizer chooses on them.
    pub val: Vec<Record>,
    pub attacker: Vec<Record>,
    pub test: Vec<Record>,
}

/// Per-class quotas for drawing `n` images from a pool with `counts` per class.
pub fn quotas(counts: &[usize], n: usize) -> Vec<usize> {
    let total: usize = counts.iter().sum();
    if total == 0 {
        return vec![0; counts.len()];
    }
    let mut q: Vec<usize> = counts.iter().map(|&c| c * n / total).collect();
    let mut rem: Vec<(usize, usize)> = counts
        .iter()
        .enumerate()
        .map(|(i, &c)| ((c * n) % total, i))
        .collect();
    // Largest remainder first; ties go to the lower class index so the result is deterministic.
    rem.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut left = n - q.iter().sum::<usize>();
    for (_, i) in rem {
        if left == 0 {
            break;
        }
        if q[i] < counts[i] {
            q[i] += 1;
            left -= 1;
        }
    }
    q
}

/// Draws `sizes.len()` disjoint stratified subsets from `pool`, in order; returns them sorted by id.
fn draw(pool: Vec<Record>, classes: usize, sizes: &[usize], seed: u64) -> Vec<Vec<Record>> {
    let mut by_class: Vec<Vec<Record>> = vec![Vec::new(); classes];
    for r in pool {
        by_class[r.label as usize].push(r);
    }
    // Each split draws from what the earlier splits left, so the quotas of all splits together
    // never exceed a class's count (independent roundings could).
    let mut left: Vec<usize> = by_class.iter().map(Vec::len).collect();
    let per_split: Vec<Vec<usize>> = sizes
        .iter()
        .map(|&n| {
            let q = quotas(&left, n);
            for (l, k) in left.iter_mut().zip(&q) {
                *l -= k;
            }
            q
        })
        .collect();
    let mut out: Vec<Vec<Record>> = vec![Vec::new(); sizes.len()];
    for (c, mut members) in by_class.into_iter().enumerate() {
        // One stream per class, so a class's draw does not depend on the other classes.
        let mut rng =
            ChaCha8Rng::seed_from_u64(seed ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(c as u64 + 1)));
        members.shuffle(&mut rng);
        let mut it = members.into_iter();
        for (s, quota) in per_split.iter().enumerate() {
            out[s].extend(it.by_ref().take(quota[c]));
        }
    }
    for split in &mut out {
        split.sort_by_key(|r| r.id);
    }
    out
}

/// Assigns images to the train, val, attacker and test splits. `val` comes from the training
/// images, like `train` and `attacker`, and is drawn after them: adding a validation split
/// leaves the train and attacker images of a seed as they were.
pub fn split(data: Dataset, sizes: SplitSizes, seed: u64) -> Result<Splits, IngestError> {
    Ok(draw_splits(data, sizes, seed, &|_| Ok(0))?.0)
}

/// The images of the final training (`final.train_images`): the train split of [`split`]
/// grown to `train_images` (or by everything left) with images drawn from what the other
/// splits leave, and its val and test splits as they are; no attacker split.
pub fn split_final(
    data: Dataset,
    sizes: SplitSizes,
    seed: u64,
    train_images: ImageCount,
) -> Result<Splits, IngestError> {
    let extra = |left: usize| match train_images {
        ImageCount::All(_) => Ok(left),
        ImageCount::Count(n) if n < sizes.train => Err(IngestError::Split(format!(
            "`final.train_images` = {n} is fewer than the train split's {} images",
            sizes.train
        ))),
        ImageCount::Count(n) if n - sizes.train > left => Err(IngestError::Split(format!(
            "`final.train_images` = {n} needs {} images beyond the train split, but the splits leave {left} of the training set (`all` takes them all)",
            n - sizes.train
        ))),
        ImageCount::Count(n) => Ok(n - sizes.train),
    };
    let (mut s, extra) = draw_splits(data, sizes, seed, &extra)?;
    s.train.extend(extra);
    s.train.sort_by_key(|r| r.id);
    s.attacker.clear();
    Ok(s)
}

/// Draws the four splits and, last, `extra(left)` more training images from the `left` that
/// the splits leave of the training set. Each split draws from what the earlier ones left, so
/// the extra images never change the four splits of a seed.
fn draw_splits(
    data: Dataset,
    sizes: SplitSizes,
    seed: u64,
    extra: &dyn Fn(usize) -> Result<usize, IngestError>,
) -> Result<(Splits, Vec<Record>), IngestError> {
    let classes = data.class_names.len();
    let have = data.train_pool.len();
    match data.test_pool {
        Some(test_pool) => {
            let want = sizes.train + sizes.val + sizes.attacker;
            if want > have {
                return Err(IngestError::Split(format!(
                    "requested train {} + val {} + attacker {} = {want} images from the training set, which has {have}",
                    sizes.train, sizes.val, sizes.attacker,
                )));
            }
            if sizes.test > test_pool.len() {
                return Err(IngestError::Split(format!(
                    "requested {} test images, the test set has {}",
                    sizes.test,
                    test_pool.len()
                )));
            }
            let more = extra(have - want)?;
            let order = [sizes.attacker, sizes.train, sizes.val, more];
            let [attacker, train, val, more]: [Vec<Record>; 4] =
                draw(data.train_pool, classes, &order, seed)
                    .try_into()
                    .expect("four sets were drawn");
            let mut t = draw(test_pool, classes, &[sizes.test], seed.wrapping_add(1));
            let test = t.pop().expect("one split was drawn");
            Ok((
                Splits {
                    train,
                    val,
                    attacker,
                    test,
                },
                more,
            ))
        }
        None => {
            let want = sizes.train + sizes.val + sizes.attacker + sizes.test;
            if want > have {
                return Err(IngestError::Split(format!(
                    "requested train {} + val {} + attacker {} + test {} = {want} images, the dataset has {have}",
                    sizes.train, sizes.val, sizes.attacker, sizes.test
                )));
            }
            let more = extra(have - want)?;
            let order = [sizes.test, sizes.attacker, sizes.train, sizes.val, more];
            let [test, attacker, train, val, more]: [Vec<Record>; 5] =
                draw(data.train_pool, classes, &order, seed)
                    .try_into()
                    .expect("five sets were drawn");
            Ok((
                Splits {
                    train,
                    val,
                    attacker,
                    test,
                },
                more,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_that_take_the_whole_pool_take_every_image() {
        let pool: Vec<Record> = (0..30)
            .map(|i| Record {
                id: i,
                label: (i % 7 % 3) as i32,
                source: String::new(),
                pixels: vec![],
            })
            .collect();
        let out = draw(pool, 3, &[20, 5, 5], 1);
        let sizes: Vec<usize> = out.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![20, 5, 5]);
    }

    fn pool(ids: std::ops::Range<i64>) -> Vec<Record> {
        ids.map(|i| Record {
            id: i,
            label: (i % 5) as i32,
            source: String::new(),
            pixels: vec![],
        })
        .collect()
    }

    fn ids(r: &[Record]) -> std::collections::BTreeSet<i64> {
        r.iter().map(|r| r.id).collect()
    }

    #[test]
    fn val_comes_from_the_training_images_disjoint_and_stratified() {
        let sizes = |val| SplitSizes {
            train: 100,
            val,
            attacker: 50,
            test: 40,
        };
        let data = |test_pool: bool| Dataset {
            class_names: (0..5).map(|c| c.to_string()).collect(),
            height: 1,
            width: 1,
            train_pool: pool(0..400),
            test_pool: test_pool.then(|| pool(1000..1100)),
        };
        for separate_test in [true, false] {
            let s = split(data(separate_test), sizes(30), 9).unwrap();
            assert_eq!(s.val.len(), 30);
            let (tr, va, at, te) = (ids(&s.train), ids(&s.val), ids(&s.attacker), ids(&s.test));
            assert!(va.is_disjoint(&tr) && va.is_disjoint(&at) && va.is_disjoint(&te));
            assert!(tr.is_disjoint(&at) && tr.is_disjoint(&te) && at.is_disjoint(&te));
            // From the training images, never from the test set.
            assert!(va.iter().all(|&i| i < 400));
            // Stratified: 5 balanced classes, 6 each.
            let mut per = [0usize; 5];
            for r in &s.val {
                per[r.label as usize] += 1;
            }
            assert_eq!(per, [6; 5]);
            // Seeded, and drawn last: without it, the other splits are the same images.
            let again = split(data(separate_test), sizes(30), 9).unwrap();
            assert_eq!(ids(&again.val), va);
            let none = split(data(separate_test), sizes(0), 9).unwrap();
            assert!(none.val.is_empty());
            assert_eq!((ids(&none.train), ids(&none.attacker)), (tr, at));
            assert_eq!(ids(&none.test), te);
        }
        // Too many: the message counts the validation images too.
        let e = split(data(true), sizes(251), 9).unwrap_err().to_string();
        assert!(e.contains("val 251") && e.contains("= 401"), "{e}");
    }

    #[test]
    fn the_final_train_split_grows_from_what_the_others_leave() {
        let sizes = SplitSizes {
            train: 100,
            val: 30,
            attacker: 50,
            test: 40,
        };
        let data = |test_pool: bool| Dataset {
            class_names: (0..5).map(|c| c.to_string()).collect(),
            height: 1,
            width: 1,
            train_pool: pool(0..400),
            test_pool: test_pool.then(|| pool(1000..1100)),
        };
        for separate_test in [true, false] {
            let s = split(data(separate_test), sizes, 9).unwrap();
            let f = split_final(data(separate_test), sizes, 9, ImageCount::Count(150)).unwrap();
            // The characterization's train split is inside the final one; val and test are
            // the same images; the attacker pool is not used.
            assert_eq!(f.train.len(), 150);
            assert!(ids(&s.train).is_subset(&ids(&f.train)));
            assert_eq!((ids(&f.val), ids(&f.test)), (ids(&s.val), ids(&s.test)));
            assert!(f.attacker.is_empty());
            let ft = ids(&f.train);
            assert!(ft.is_disjoint(&ids(&s.attacker)) && ft.is_disjoint(&ids(&s.val)));
            assert!(ft.is_disjoint(&ids(&s.test)));
            // `all` takes every image the four splits leave.
            let all = split_final(
                data(separate_test),
                sizes,
                9,
                ImageCount::All(privynet_core::manifest::AllKeyword::All),
            )
            .unwrap();
            let used = if separate_test { 180 } else { 220 };
            assert_eq!(all.train.len(), 100 + 400 - used);
        }
        let e = split_final(data(true), sizes, 9, ImageCount::Count(400)).unwrap_err();
        assert!(
            e.to_string()
                .contains("needs 300 images beyond the train split, but the splits leave 220"),
            "{e}"
        );
        let e = split_final(data(true), sizes, 9, ImageCount::Count(99)).unwrap_err();
        assert!(
            e.to_string().contains("fewer than the train split's 100"),
            "{e}"
        );
    }

    #[test]
    fn quotas_sum_and_keep_balance() {
        assert_eq!(quotas(&[10, 10, 10], 6), vec![2, 2, 2]);
        assert_eq!(quotas(&[10, 10, 10], 7).iter().sum::<usize>(), 7);
        assert_eq!(quotas(&[1, 0, 99], 100), vec![1, 0, 99]);
    }

    proptest::proptest! {
        #[test]
        fn quotas_never_exceed_counts(counts in proptest::collection::vec(0usize..50, 1..12), frac in 0.0f64..=1.0) {
            let total: usize = counts.iter().sum();
            let n = (total as f64 * frac) as usize;
            let q = quotas(&counts, n);
            proptest::prop_assert_eq!(q.iter().sum::<usize>(), n);
            for (a, b) in q.iter().zip(&counts) {
                proptest::prop_assert!(a <= b);
            }
        }
    }
}
