//! A checked, safe call of the `gemm` crate (burn-flex's own matrix product) on strided
//! views of slices: the one place in the project that calls unsafe code, with every address
//! it lets gemm touch checked against its slice first.

/// A strided matrix inside a slice: element `(r, c)` at `offset + r * strides[0] + c *
/// strides[1]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct View {
    offset: usize,
    shape: [usize; 2],
    strides: [usize; 2],
}

impl View {
    pub(crate) fn new(offset: usize, shape: [usize; 2], strides: [usize; 2]) -> Self {
        Self {
            offset,
            shape,
            strides,
        }
    }

    /// Tap `t` of a convolution weight `[o, c, taps]` (contiguous) as `[o, c]`, or,
    /// `transposed`, `[c, o]`.
    pub(crate) fn weight_tap(o: usize, c: usize, taps: usize, t: usize, transposed: bool) -> Self {
        let (along_o, along_c) = (c * taps, taps);
        if transposed {
            Self::new(t, [c, o], [along_c, along_o])
        } else {
            Self::new(t, [o, c], [along_o, along_c])
        }
    }

    pub(crate) fn cols(&self) -> usize {
        self.shape[1]
    }

    /// Whether every element lies within a slice of `len` values.
    fn within(&self, len: usize) -> bool {
        let [r, c] = self.shape;
        r == 0
            || c == 0
            || self.offset + (r - 1) * self.strides[0] + (c - 1) * self.strides[1] < len
    }

    /// Whether no two elements share an address (one stride spans the other axis whole).
    fn distinct(&self) -> bool {
        let ([r, c], [rs, cs]) = (self.shape, self.strides);
        r <= 1 || c <= 1 || rs >= c * cs || cs >= r * rs
    }
}

/// `dst = lhs @ rhs`, or `dst += lhs @ rhs` where `accumulate`, single-threaded (callers run
/// tiles in parallel).
///
/// # Panics
/// If the shapes do not chain, a view reaches outside its slice, or `d` names an element
/// twice.
#[allow(unsafe_code)]
pub(crate) fn gemm(
    dst: &mut [f32],
    d: View,
    accumulate: bool,
    lhs: &[f32],
    a: View,
    rhs: &[f32],
    b: View,
) {
    let ([m, n], k) = (d.shape, a.shape[1]);
    assert!(
        a.shape[0] == m && b.shape == [k, n],
        "gemm: [{m}, {n}] = {:?} @ {:?} does not chain",
        a.shape,
        b.shape
    );
    assert!(
        d.within(dst.len()) && a.within(lhs.len()) && b.within(rhs.len()) && d.distinct(),
        "gemm: a view reaches outside its slice"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                for c in 0..n {
                    dst[d.offset + r * d.strides[0] + c * d.strides[1]] = 0.0;
                }
            }
        }
        return;
    }
    let s = |v: usize| v as isize;
    // SAFETY: every element gemm reads (lhs, rhs) or writes (dst) is at `offset + r * rs + c *
    // cs` for r, c within the view's shape, which the asserts above keep inside its slice;
    // the distinct check keeps dst's writes from overlapping; `dst` is borrowed mutably, so it
    // aliases neither `lhs` nor `rhs`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr().add(d.offset),
            s(d.strides[1]),
            s(d.strides[0]),
            accumulate,
            lhs.as_ptr().add(a.offset),
            s(a.strides[1]),
            s(a.strides[0]),
            rhs.as_ptr().add(b.offset),
            s(b.strides[1]),
            s(b.strides[0]),
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_of_strided_views() {
        // lhs [2, 3] row-major; rhs [3, 2] stored transposed (column-major).
        let lhs = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let rhs = [1.0, 0.0, 2.0, 0.0, 1.0, 1.0];
        let mut dst = [10.0; 4];
        let (a, b) = (View::new(0, [2, 3], [3, 1]), View::new(0, [3, 2], [1, 3]));
        gemm(
            &mut dst,
            View::new(0, [2, 2], [2, 1]),
            false,
            &lhs,
            a,
            &rhs,
            b,
        );
        assert_eq!(dst, [7.0, 5.0, 16.0, 11.0]);
        gemm(
            &mut dst,
            View::new(0, [2, 2], [2, 1]),
            true,
            &lhs,
            a,
            &rhs,
            b,
        );
        assert_eq!(dst, [14.0, 10.0, 32.0, 22.0]);
    }

    #[test]
    #[should_panic(expected = "outside its slice")]
    fn a_view_past_its_slice_is_refused() {
        let mut dst = [0.0; 4];
        let v = View::new(1, [2, 2], [2, 1]);
        gemm(&mut dst, v, false, &[0.0; 4], v, &[0.0; 4], v);
    }
}
