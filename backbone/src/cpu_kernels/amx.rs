//! Intel AMX (Advanced Matrix Extensions) for the bf16 products: eight tile registers of up to
//! 16 rows × 64 bytes, and `tdpbf16ps`, which multiplies a 16 × 32 bf16 tile by a 32 × 16 one
//! (its rows stored as pairs of `k`, as [`super::bf16_gemm`] packs them) into a 16 × 16 f32 tile
//! in one instruction: eight times the products per cycle of AVX-512 BF16's `vdpbf16ps`.
//!
//! The products use all eight tiles: four 16 × 16 accumulators (a 32 × 32 block of the
//! destination), two tiles of 16 weight rows and two of 16 image columns, each loaded once per
//! 16 pairs of `k` and used twice. The accumulators are stored to a block in L1 and finished
//! there (bias, activation) on their way into the destination.
//!
//! Linux hands out the 8 KiB of tile state only to processes that ask for it
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`); [`amx_available`] asks once. The
//! instructions are written as inline assembly: Rust's AMX intrinsics are not stable.

use std::sync::OnceLock;

/// Rows (of weights, of output channels) per tile.
pub(super) const TILE_ROWS: usize = 16;
/// Pairs of `k` per tile row (64 bytes).
pub(super) const TILE_PAIRS: usize = 16;
/// Words in one weight tile (16 rows × 16 pairs).
pub(super) const TILE_WORDS: usize = TILE_ROWS * TILE_PAIRS;

/// Whether the bf16 products may use AMX: the CPU has AMX-TILE and AMX-BF16, the kernel enables
/// their state (XCR0), this process was granted it, and `TRESNET_AMX` is not `0`. Checked once.
pub fn amx_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        if std::env::var("TRESNET_AMX").is_ok_and(|v| v.trim() == "0") {
            return false;
        }
        super::native_bf16() && detect::cpu_has_amx() && detect::request_tile_state()
    })
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod detect {
    use std::arch::x86_64::{__cpuid_count, _xgetbv};

    /// AMX-BF16 (CPUID.(7,0):EDX bit 22) and AMX-TILE (bit 24), with the OS saving the tile
    /// configuration and data (XCR0 bits 17 and 18).
    pub(super) fn cpu_has_amx() -> bool {
        let max_leaf = __cpuid_count(0, 0).eax;
        if max_leaf < 7 {
            return false;
        }
        let edx = __cpuid_count(7, 0).edx;
        let (bf16, tile) = (edx & (1 << 22) != 0, edx & (1 << 24) != 0);
        // OSXSAVE (CPUID.1:ECX bit 27): XGETBV may be executed.
        let osxsave = __cpuid_count(1, 0).ecx & (1 << 27) != 0;
        if !(bf16 && tile && osxsave) {
            return false;
        }
        #[allow(unsafe_code)]
        // SAFETY: OSXSAVE is set, so XGETBV exists and XCR0 may be read.
        let xcr0 = unsafe { xgetbv0() };
        xcr0 & (0b11 << 17) == 0b11 << 17
    }

    #[allow(unsafe_code)]
    #[target_feature(enable = "xsave")]
    unsafe fn xgetbv0() -> u64 {
        // SAFETY: the caller checked OSXSAVE.
        unsafe { _xgetbv(0) }
    }

    /// Asks Linux for permission to use the tile data state; `false` where it refuses (kernels
    /// before 5.16, or a hypervisor that withholds it).
    pub(super) fn request_tile_state() -> bool {
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        #[allow(unsafe_code)]
        // SAFETY: a plain system call with two integer arguments; it changes no memory of ours.
        let status = unsafe {
            libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_REQ_XCOMP_PERM,
                XFEATURE_XTILEDATA,
            )
        };
        status == 0
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
mod detect {
    pub(super) fn cpu_has_amx() -> bool {
        false
    }
    pub(super) fn request_tile_state() -> bool {
        false
    }
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub(super) mod kernels {
    use std::arch::asm;
    use std::arch::x86_64::*;

    use super::{TILE_PAIRS, TILE_ROWS, TILE_WORDS};
    use crate::cpu_kernels::conv::Epilogue;
    use crate::cpu_kernels::sgemm::MatMut;

    /// Columns per panel of the packed image columns (two tiles of 16).
    pub(in crate::cpu_kernels) const PANEL: usize = 32;

    /// The tile configuration `ldtilecfg` reads (palette 1): tiles 0-7 all 16 rows × 64 bytes.
    #[repr(C, align(64))]
    struct TileConfig {
        palette: u8,
        start_row: u8,
        reserved: [u8; 14],
        bytes_per_row: [u16; 16],
        rows: [u8; 16],
    }

    const CONFIG: TileConfig = TileConfig {
        palette: 1,
        start_row: 0,
        reserved: [0; 14],
        bytes_per_row: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
        rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
    };

    /// A 32 × 32 block of f32 sums, row-major, on whole cache lines: where the four
    /// accumulators are stored after the products.
    #[repr(C, align(64))]
    pub(in crate::cpu_kernels) struct Block(pub(in crate::cpu_kernels) [f32; PANEL * PANEL]);

    impl Default for Block {
        fn default() -> Self {
            Self([0.0; PANEL * PANEL])
        }
    }

    /// The tiles configured on this thread for [`products`], released when dropped (so that the
    /// OS need not save 8 KiB of tile data at every switch while no products run).
    pub(in crate::cpu_kernels) struct Tiles(());

    impl Tiles {
        /// Configures the tiles.
        ///
        /// # Safety
        /// [`super::amx_available`] is true.
        #[allow(unsafe_code)]
        pub(in crate::cpu_kernels) unsafe fn configure() -> Self {
            // SAFETY: AMX is usable (the caller's contract); the configuration is valid.
            unsafe { asm!("ldtilecfg [{0}]", in(reg) &CONFIG, options(nostack, readonly)) };
            Self(())
        }
    }

    impl Drop for Tiles {
        fn drop(&mut self) {
            #[allow(unsafe_code)]
            // SAFETY: AMX is usable (a `Tiles` exists only then).
            unsafe {
                asm!("tilerelease", options(nostack, nomem))
            };
        }
    }

    /// `block = Σ_s A_s · B_s` over the steps: `A_s` the 16 × 16-word tiles at `a0 + 256·s`
    /// (rows 0-15 of the block) and `a1 + 256·s` (rows 16-31; `None`: only rows 0-15 are
    /// computed), `B_s` 16 rows of 32 words `stride` bytes apart from `b + offsets[s]` bytes
    /// (columns 0-15, and 16-31 64 bytes further).
    ///
    /// # Safety
    /// Tiles configured on this thread ([`Tiles::configure`]); every tile named lies inside
    /// memory valid for reads.
    #[allow(unsafe_code)]
    #[inline(never)]
    pub(in crate::cpu_kernels) unsafe fn products(
        _tiles: &Tiles,
        a0: *const u32,
        a1: Option<*const u32>,
        b: *const u32,
        offsets: &[usize],
        stride: usize,
        block: &mut Block,
    ) {
        let steps = offsets.len();
        if steps == 0 {
            block.0.fill(0.0);
            return;
        }
        let offsets = offsets.as_ptr();
        let c = block.0.as_mut_ptr();
        match a1 {
            // SAFETY: every load stays inside the operands (the caller's contract); the
            // stores fill `block` (4 KiB), rows 128 bytes apart.
            Some(a1) => unsafe {
                asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    "2:",
                    "mov {bt}, [{offsets}]",
                    "add {bt}, {b}",
                    "tileloadd tmm4, [{a0} + {s64}*1]",
                    "tileloadd tmm6, [{bt} + {stride}*1]",
                    "tileloadd tmm7, [{bt} + {stride}*1 + 64]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tileloadd tmm5, [{a1} + {s64}*1]",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    "add {a0}, 1024",
                    "add {a1}, 1024",
                    "add {offsets}, 8",
                    "dec {k}",
                    "jnz 2b",
                    "mov {bt}, 128",
                    "tilestored [{c} + {bt}*1], tmm0",
                    "tilestored [{c} + {bt}*1 + 64], tmm1",
                    "tilestored [{c} + {bt}*1 + 2048], tmm2",
                    "tilestored [{c} + {bt}*1 + 2112], tmm3",
                    a0 = inout(reg) a0 => _,
                    a1 = inout(reg) a1 => _,
                    offsets = inout(reg) offsets => _,
                    k = inout(reg) steps => _,
                    bt = out(reg) _,
                    b = in(reg) b,
                    stride = in(reg) stride,
                    c = in(reg) c,
                    s64 = in(reg) 64usize,
                    out("tmm0") _, out("tmm1") _, out("tmm2") _, out("tmm3") _,
                    out("tmm4") _, out("tmm5") _, out("tmm6") _, out("tmm7") _,
                    options(nostack),
                );
            },
            // SAFETY: as above, rows 0-15 of the block only.
            None => unsafe {
                asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "2:",
                    "mov {bt}, [{offsets}]",
                    "add {bt}, {b}",
                    "tileloadd tmm4, [{a0} + {s64}*1]",
                    "tileloadd tmm6, [{bt} + {stride}*1]",
                    "tileloadd tmm7, [{bt} + {stride}*1 + 64]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "add {a0}, 1024",
                    "add {offsets}, 8",
                    "dec {k}",
                    "jnz 2b",
                    "mov {bt}, 128",
                    "tilestored [{c} + {bt}*1], tmm0",
                    "tilestored [{c} + {bt}*1 + 64], tmm1",
                    a0 = inout(reg) a0 => _,
                    offsets = inout(reg) offsets => _,
                    k = inout(reg) steps => _,
                    bt = out(reg) _,
                    b = in(reg) b,
                    stride = in(reg) stride,
                    c = in(reg) c,
                    s64 = in(reg) 64usize,
                    out("tmm0") _, out("tmm1") _, out("tmm4") _, out("tmm6") _, out("tmm7") _,
                    options(nostack),
                );
            },
        }
    }

    /// `steps` rounds of four independent tile products (on zeroed tiles), for the peak rate.
    ///
    /// # Safety
    /// [`super::amx_available`] is true.
    #[allow(unsafe_code)]
    pub(in crate::cpu_kernels) unsafe fn tile_loop(steps: u64) {
        // SAFETY: AMX is usable (the caller's contract).
        let _tiles = unsafe { Tiles::configure() };
        if steps == 0 {
            return;
        }
        // SAFETY: register-only instructions on configured tiles.
        unsafe {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                "tilezero tmm4",
                "tilezero tmm5",
                "tilezero tmm6",
                "tilezero tmm7",
                "2:",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                "dec {k}",
                "jnz 2b",
                k = inout(reg) steps => _,
                out("tmm0") _, out("tmm1") _, out("tmm2") _, out("tmm3") _,
                out("tmm4") _, out("tmm5") _, out("tmm6") _, out("tmm7") _,
                options(nostack, nomem),
            );
        }
    }

    /// `dst = act(a · b + bias)`: `a` the weight rows of `dst` in tiles (`⌈rows/16⌉` row
    /// blocks of `kblocks` tiles of [`TILE_WORDS`], row-major, zero rows and pairs past the
    /// matrix), `b` the image columns in panels of 32 columns by `kblocks·16` pairs (32 words
    /// per pair, zero pairs past `k`), `bias` one value per row of `dst`.
    ///
    /// # Safety
    /// [`super::amx_available`] is true; `dst` is in bounds and accessed by no one else during
    /// the call. (The operands' sizes are checked.)
    #[allow(unsafe_code)]
    #[target_feature(enable = "avx512f")]
    pub(in crate::cpu_kernels) unsafe fn gemm_tiles(
        a: &[u32],
        kblocks: usize,
        b: &[u32],
        dst: MatMut,
        bias: Option<&[f32]>,
        epilogue: Epilogue,
    ) {
        let (m, n) = (dst.rows, dst.cols);
        let row_blocks = m.div_ceil(TILE_ROWS);
        let panels = n.div_ceil(PANEL);
        assert!(
            a.len() >= row_blocks * kblocks * TILE_WORDS,
            "amx: weight tiles"
        );
        assert!(
            b.len() >= panels * kblocks * TILE_PAIRS * PANEL,
            "amx: column panels"
        );
        assert!(bias.is_none_or(|b| b.len() >= m), "amx: one bias per row");
        // Step `s` reads pairs `16s .. 16s + 16` of a panel: 16 rows of 32 words.
        let offsets: Vec<usize> = (0..kblocks).map(|s| s * TILE_PAIRS * PANEL * 4).collect();
        let zeros = [0f32; 2 * TILE_ROWS];
        let mut block = Block::default();
        // SAFETY: AMX is usable (the caller's contract).
        let tiles = unsafe { Tiles::configure() };
        for rb in (0..row_blocks).step_by(2) {
            let rows = (m - rb * TILE_ROWS).min(2 * TILE_ROWS);
            let shifts = bias.map_or(&zeros[..rows], |b| &b[rb * TILE_ROWS..][..rows]);
            let a0 = a[rb * kblocks * TILE_WORDS..].as_ptr();
            let a1 = (rb + 1 < row_blocks).then(|| a[(rb + 1) * kblocks * TILE_WORDS..].as_ptr());
            for p in 0..panels {
                let b0 = b[p * kblocks * TILE_PAIRS * PANEL..].as_ptr();
                // SAFETY: the row blocks and the panel hold `kblocks` tiles each (asserted).
                unsafe { products(&tiles, a0, a1, b0, &offsets, PANEL * 4, &mut block) };
                let cols = (n - p * PANEL).min(PANEL);
                let out = dst.offset + rb * TILE_ROWS * dst.row_stride + p * PANEL;
                for (r, &shift) in shifts.iter().enumerate() {
                    // SAFETY: `rows × cols` from `out` lie inside `dst` (asserted by the
                    // caller); `block` rows hold 32 values.
                    unsafe {
                        finish_run(
                            &block.0[r * PANEL..],
                            dst.base.add(out + r * dst.row_stride),
                            cols,
                            shift,
                            epilogue,
                            None,
                        )
                    };
                }
            }
        }
    }

    /// `out[j] = act(sums[j] + shift)` for `j < len` (≤ 32); with `residual = Some((r, then))`,
    /// `out[j] = then(act(sums[j] + shift) + r[j])`.
    ///
    /// # Safety
    /// AVX-512 F present; `out` valid for `len` writes; `sums` (and `r`) hold at least `len`
    /// values.
    #[allow(unsafe_code)]
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(in crate::cpu_kernels) unsafe fn finish_run(
        sums: &[f32],
        out: *mut f32,
        len: usize,
        shift: f32,
        epilogue: Epilogue,
        residual: Option<(&[f32], Epilogue)>,
    ) {
        assert!(len <= PANEL && sums.len() >= len);
        assert!(residual.is_none_or(|(r, _)| r.len() >= len));
        let s = _mm512_set1_ps(shift);
        // `max` takes its second operand where the first is NaN: relu(NaN) = 0, as the other
        // kernels give.
        let activate = |z: __m512, epilogue: Epilogue| match epilogue {
            Epilogue::Identity => z,
            Epilogue::Relu => _mm512_max_ps(z, _mm512_setzero_ps()),
            Epilogue::LeakyRelu(slope) => _mm512_max_ps(z, _mm512_mul_ps(z, _mm512_set1_ps(slope))),
        };
        for first in (0..len).step_by(16) {
            let width = (len - first).min(16);
            let mask = ((1u32 << width) - 1) as __mmask16;
            // SAFETY: the mask covers `width` values of `sums`, `r` and `out` from `first`.
            unsafe {
                let z = _mm512_add_ps(_mm512_maskz_loadu_ps(mask, sums.as_ptr().add(first)), s);
                let mut v = activate(z, epilogue);
                if let Some((r, then)) = residual {
                    let r = _mm512_maskz_loadu_ps(mask, r.as_ptr().add(first));
                    v = activate(_mm512_add_ps(v, r), then);
                }
                _mm512_mask_storeu_ps(out.add(first), mask, v);
            }
        }
    }
}
