// Moving between views: navigate(hash), and a message for the next view to show.

let flashed = null;

/** A message for the next view to show (e.g. "purged"), after navigate(). */
export function flash(kind, text) {
  flashed = {kind, text};
}

export function takeFlash() {
  const message = flashed;
  flashed = null;
  return message;
}

export function navigate(hash) {
  if (location.hash === hash) window.dispatchEvent(new HashChangeEvent("hashchange"));
  else location.hash = hash;
}
