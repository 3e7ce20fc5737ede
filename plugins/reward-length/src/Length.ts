/**
 * Length shaping, in completion tokens `L`.
 *
 * Cosine length-scaling (Yeo et al. 2025, "Demystifying Long Chain-of-Thought Reasoning in LLMs"):
 *
 *   CosFn(L, L_max, r_0, r_max) = r_max + ½ (r_0 − r_max) (1 + cos(π L / L_max))
 *
 * with (r_0, r_max) = (correctAtZero, correctAtMax) for a correct answer (short and right is best)
 * and (wrongAtZero, wrongAtMax) for a wrong one (a wrong answer should at least have thought long),
 * and `exceed` when the completion hit the max length.
 *
 * Soft overlong punishment (DAPO, Yu et al. 2025), with L_exp = L_max − buffer:
 *
 *   0 when L ≤ L_exp;   (L_exp − L) / buffer when L_exp < L ≤ L_max;   −1 when L > L_max
 */

/** The cosine schedule from `atZero` (L = 0) to `atMax` (L = maxLength). */
export const cosine = (length: number, maxLength: number, atZero: number, atMax: number): number =>
  atMax + 0.5 * (atZero - atMax) * (1 + Math.cos((Math.PI * Math.min(length, maxLength)) / maxLength))

/** DAPO's soft overlong penalty. */
export const overlong = (length: number, maxLength: number, buffer: number): number => {
  if (length > maxLength) return -1
  const expected = maxLength - buffer
  return length <= expected ? 0 : (expected - length) / buffer
}
