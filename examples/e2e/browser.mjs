// Launches Debian's Chromium headless, as every end-to-end script here does.
import { chromium } from "playwright-core";

export const launch = (extraArgs = []) =>
  chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
      "--no-first-run", "--disable-component-update", "--disable-sync",
      ...extraArgs,
    ],
  });

export const check = (condition, message) => {
  if (!condition) throw new Error(message);
};
