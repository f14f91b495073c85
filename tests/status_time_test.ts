import assert from "node:assert/strict";
import { isoTime } from "../src/control/status.ts";

Deno.test("status writes start times exactly as Date.prototype.toISOString does", () => {
  const cases = [0, 1, 999, 86_399_999, 86_400_000, 951_782_400_000, 1e12, 1_700_000_000_123.9];
  cases.push(253_402_300_799_999, 253_402_300_800_000, -1, -86_400_001); // the range's edges
  for (let year = 1970; year < 2200; year++) {
    for (const at of ["01-01T00:00:00.000", "02-28T23:59:59.999", "03-01T00:00:00.000"]) {
      const ms = Date.parse(`${year}-${at}Z`);
      cases.push(ms - 1, ms, ms + 0.5);
    }
  }
  let seed = 7;
  for (let i = 0; i < 20_000; i++) {
    seed = (seed * 48_271) % 2_147_483_647;
    cases.push((seed / 2_147_483_647) * 253_402_300_799_999);
  }
  for (const ms of cases) assert.equal(isoTime(ms), new Date(ms).toISOString(), `at ${ms}`);
});
