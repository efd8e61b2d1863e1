//! Panels from shifted planes at every available level, against the definition.

mod common;

use common::{Rng, isas, unavailable_isa};
use student_kernels::{
    KernelError, NR, PanelSource, interleave_4x16, unfold_panel_f32, unfold_panel_u8,
};

/// Sources of 1 to 7 channels and 1 to 9 taps, offsets reaching both margins, and random
/// masks including none and all lanes.
fn sources(rng: &mut Rng) -> Vec<(usize, usize, Vec<isize>, Vec<u16>)> {
    let mut out = Vec::new();
    for channels in [1, 2, 3, 5, 7] {
        for taps in [1, 2, 4, 9] {
            let offsets: Vec<isize> = (0..taps).map(|_| rng.below(41) as isize - 20).collect();
            let masks: Vec<u16> = (0..taps)
                .map(|t| match t % 3 {
                    0 => rng.next() as u16,
                    1 => 0xffff,
                    _ => 0,
                })
                .collect();
            out.push((channels, taps, offsets, masks));
        }
    }
    out
}

#[test]
fn f32_panels_match_the_definition() {
    let mut rng = Rng::new(5);
    for (channels, taps, offsets, masks) in sources(&mut rng) {
        // Margins of 20 on both sides of planes of 50, read from base 20 + 16 p.
        let stride = 20 + 50 + 20 + NR;
        let planes = rng.f32s(channels * stride);
        for base in [20, 36, 52] {
            let src = PanelSource {
                planes: &planes,
                stride,
                channels,
                base,
                offsets: &offsets,
                masks: &masks,
            };
            let want: Vec<[f32; NR]> = (0..channels * taps)
                .map(|r| {
                    let (c, t) = (r / taps, r % taps);
                    let at = (c * stride + base).wrapping_add_signed(offsets[t]);
                    std::array::from_fn(|j| {
                        if masks[t] >> j & 1 == 1 {
                            planes[at + j]
                        } else {
                            0.0
                        }
                    })
                })
                .collect();
            for isa in isas() {
                let mut got = vec![[f32::NAN; NR]; channels * taps + 1];
                unfold_panel_f32(isa, src, &mut got).unwrap();
                assert_eq!(&got[..want.len()], &want[..], "{isa} {channels} x {taps}");
                assert!(
                    got[want.len()].iter().all(|v| v.is_nan()),
                    "{isa}: wrote past"
                );
            }
        }
    }
}

#[test]
fn u8_panels_match_the_definition() {
    let mut rng = Rng::new(9);
    for (channels, taps, offsets, masks) in sources(&mut rng) {
        let stride = 20 + 50 + 20 + NR;
        let planes = rng.u8s(channels * stride);
        let fill: [u8; NR] = std::array::from_fn(|j| if j < 11 { 7 } else { 0 });
        for base in [20, 36, 52] {
            let src = PanelSource {
                planes: &planes,
                stride,
                channels,
                base,
                offsets: &offsets,
                masks: &masks,
            };
            let rows = channels * taps;
            let row = |r: usize| -> [u8; NR] {
                if r >= rows {
                    return [0; NR];
                }
                let (c, t) = (r / taps, r % taps);
                let at = (c * stride + base).wrapping_add_signed(offsets[t]);
                std::array::from_fn(|j| {
                    if masks[t] >> j & 1 == 1 {
                        planes[at + j]
                    } else {
                        fill[j]
                    }
                })
            };
            let want: Vec<[u8; 64]> = (0..rows.div_ceil(4))
                .map(|g| {
                    let quad = [row(4 * g), row(4 * g + 1), row(4 * g + 2), row(4 * g + 3)];
                    interleave_4x16([&quad[0], &quad[1], &quad[2], &quad[3]])
                })
                .collect();
            for isa in isas() {
                let mut got = vec![[0xa5u8; 64]; want.len() + 1];
                unfold_panel_u8(isa, src, &fill, &mut got).unwrap();
                assert_eq!(&got[..want.len()], &want[..], "{isa} {channels} x {taps}");
                assert_eq!(got[want.len()], [0xa5; 64], "{isa}: wrote past");
            }
        }
    }
}

#[test]
fn panels_refuse_pieces_outside_the_planes_and_short_outputs() {
    let planes = [0.0f32; 64];
    let ok = PanelSource {
        planes: &planes,
        stride: 32,
        channels: 2,
        base: 4,
        offsets: &[-4, 12],
        masks: &[0xffff, 0xffff],
    };
    let isa = isas()[0];
    let mut out = vec![[0.0; NR]; 4];
    assert!(unfold_panel_f32(isa, ok, &mut out).is_ok());
    let before = PanelSource {
        offsets: &[-5, 12],
        ..ok
    };
    assert!(unfold_panel_f32(isa, before, &mut out).is_err());
    let after = PanelSource {
        offsets: &[-4, 13],
        ..ok
    };
    assert!(matches!(
        unfold_panel_f32(isa, after, &mut out),
        Err(KernelError::TooShort { .. })
    ));
    let few_masks = PanelSource {
        masks: &[0xffff],
        ..ok
    };
    assert!(unfold_panel_f32(isa, few_masks, &mut out).is_err());
    assert!(matches!(
        unfold_panel_f32(isa, ok, &mut out[..3]),
        Err(KernelError::TooShort { .. })
    ));
    let bytes = [0u8; 64];
    let src = PanelSource {
        planes: &bytes,
        stride: 32,
        channels: 2,
        base: 4,
        offsets: &[-4, 12],
        masks: &[0xffff, 0xffff],
    };
    let mut groups = vec![[0u8; 64]; 1];
    assert!(unfold_panel_u8(isa, src, &[0; NR], &mut groups).is_ok());
    assert!(matches!(
        unfold_panel_u8(isa, src, &[0; NR], &mut groups[..0]),
        Err(KernelError::TooShort { .. })
    ));
    assert!(matches!(
        unfold_panel_u8(unavailable_isa(), src, &[0; NR], &mut groups),
        Err(KernelError::IsaUnavailable { .. })
    ));
}
