//! Device helper functions of the generated kernels. Each kernel source carries only the
//! helpers its body names (NVRTC time grows with the text it parses), plus the dialect's
//! half-precision conversions when it touches f16 or bf16.
use crate::dialect::Dialect;

/// (name, definition). Templates are on the compute type; `D` below is the dialect's device
/// function qualifier.
const HELPERS: &[(&str, &str)] = &[
    ("kx_maxn", "template <class T> D T kx_maxn(T a, T b) { if (a != a) return a; if (b != b || b > a) return b; return a; }"),
    ("kx_minn", "template <class T> D T kx_minn(T a, T b) { if (a != a) return a; if (b != b || b < a) return b; return a; }"),
    ("kx_fsign", "template <class T> D T kx_fsign(T x) { return x > (T)0 ? (T)1 : (x < (T)0 ? (T)-1 : x); }"),
    ("kx_sigmoid", "template <class T> D T kx_sigmoid(T x) { if (x >= (T)0) return (T)1 / ((T)1 + exp(-x)); T e = exp(x); return e / ((T)1 + e); }"),
    ("kx_pymod", "template <class T> D T kx_pymod(T a, T b) { T r = fmod(a, b); if (r == (T)0) return copysign((T)0, b); if ((r < (T)0) != (b < (T)0)) return r + b; return r; }"),
    ("kx_idiv", "template <class T> D T kx_idiv(T a, T b) { if (b == 0) return 0; if ((T)-1 < (T)0 && b == (T)-1) return (T)(0 - (unsigned long long)a); return (T)(a / b); }"),
    ("kx_ifmod", "template <class T> D T kx_ifmod(T a, T b) { if (b == 0 || ((T)-1 < (T)0 && b == (T)-1)) return 0; return (T)(a % b); }"),
    ("kx_imod", "template <class T> D T kx_imod(T a, T b) { if (b == 0 || ((T)-1 < (T)0 && b == (T)-1)) return 0; T r = (T)(a % b); if (r != 0 && ((r < 0) != (b < 0))) r = (T)(r + b); return r; }"),
    ("kx_shl", "template <class T> D T kx_shl(T a, T b) { if (b < 0 || (unsigned long long)b >= sizeof(T) * 8) return 0; return (T)((unsigned long long)a << b); }"),
    ("kx_shr", "template <class T> D T kx_shr(T a, T b) { if (b < 0 || (unsigned long long)b >= sizeof(T) * 8) return a < 0 ? (T)-1 : (T)0; return (T)(a >> b); }"),
    ("kx_ipow", "template <class T> D T kx_ipow(T a, T e) { if (e < 0) { if (a == 1) return 1; if (a == (T)-1) return (e & 1) ? a : (T)1; return 0; } T acc = 1; while (e > 0) { if (e & 1) acc = (T)(acc * a); e = (T)(e >> 1); if (e > 0) a = (T)(a * a); } return acc; }"),
    ("kx_f2i", "template <class T> D T kx_f2i(double x) { const bool s = (T)-1 < (T)0; const int bits = (int)sizeof(T) * 8; const T lo = s ? (T)(1ULL << (bits - 1)) : (T)0; if (x != x) return 0; if (x <= (s ? -ldexp(1.0, bits - 1) : 0.0)) return lo; if (x >= ldexp(1.0, s ? bits - 1 : bits)) return (T)~lo; return (T)x; }"),
];

/// The prelude for a kernel whose body is `body`.
pub fn prelude(dl: &Dialect, body: &str, halves: (bool, bool)) -> String {
    let mut s = String::from(dl.header);
    if halves.0 || body.contains("kx_h2f") || body.contains("kx_f2h") || body.contains("kx_d2h") {
        s += dl.half.f16_conversions;
    }
    if halves.1 || body.contains("kx_b2f") || body.contains("kx_f2b") {
        s += dl.half.bf16_conversions;
    }
    for (name, def) in HELPERS {
        if body.contains(name) {
            s += &def.replacen(" D ", &format!(" {} ", dl.device_fn), 1);
            s.push('\n');
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::CUDA;

    #[test]
    fn only_named_helpers_are_included() {
        let p = prelude(&CUDA, "v2 = kx_maxn(v0, v1);", (false, false));
        assert!(p.contains("T kx_maxn("));
        assert!(!p.contains("kx_minn"));
        assert!(!p.contains("kx_h2f"));
        assert!(p.contains("__device__ __forceinline__ T kx_maxn"));
        let p = prelude(&CUDA, "out[o] = kx_f2b(v0);", (false, false));
        assert!(p.contains("kx_b2f") && !p.contains("cvt.f32.f16"));
    }
}
