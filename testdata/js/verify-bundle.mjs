// An independent reader of bpfship's blob bundles: sigstore-js (@sigstore/verify) checks a
// sigstore v0.3 bundle (messageSignature) over a file with a PEM public key, the way
// `cosign verify-blob --key k.pub --bundle b --insecure-ignore-tlog=true` does: the bundle's key
// hint picks the key, no transparency log, certificate log or timestamp is required.
//
// Usage: node verify-bundle.mjs BUNDLE.json FILE PUBLIC_KEY.pem
// Exit: 0 verified (a JSON line on stdout), 1 rejected (code and message on stderr), 2 usage or
// unreadable input.
import { createHash, createPublicKey } from 'node:crypto';
import { readFileSync } from 'node:fs';

import { bundleFromJSON } from '@sigstore/bundle';
import { Verifier, toSignedEntity } from '@sigstore/verify';

const [bundlePath, filePath, keyPath] = process.argv.slice(2);
if (!keyPath) {
  console.error('usage: node verify-bundle.mjs BUNDLE.json FILE PUBLIC_KEY.pem');
  process.exit(2);
}

let bundle, artifact, publicKey;
try {
  bundle = bundleFromJSON(JSON.parse(readFileSync(bundlePath, 'utf8')));
  artifact = readFileSync(filePath);
  publicKey = createPublicKey(readFileSync(keyPath));
} catch (e) {
  console.error(`verify-bundle: ${e.code ?? e.name}: ${e.message}`);
  process.exit(2);
}

// cosign's key hint: base64(sha256(SubjectPublicKeyInfo DER)).
const hint = createHash('sha256')
  .update(publicKey.export({ type: 'spki', format: 'der' }))
  .digest('base64');

const trustMaterial = {
  certificateAuthorities: [],
  timestampAuthorities: [],
  tlogs: [],
  ctlogs: [],
  publicKey: (keyHint) => {
    if (keyHint !== hint) {
      const err = new Error(`bundle key hint ${keyHint} is not the trusted key's (${hint})`);
      err.code = 'PUBLIC_KEY_ERROR';
      throw err;
    }
    return { publicKey, validFor: () => true };
  },
};

const verifier = new Verifier(trustMaterial, {
  tlogThreshold: 0,
  ctlogThreshold: 0,
  timestampThreshold: 0,
});

try {
  const entity = toSignedEntity(bundle, artifact);
  verifier.verify(entity);
  // sigstore-js checks the bundle's messageDigest only against a tlog entry; with no tlog, check
  // it here too, so a bundle naming another file's digest is not accepted.
  const ms = bundle.content.$case === 'messageSignature' ? bundle.content.messageSignature : null;
  if (ms) {
    const actual = createHash('sha256').update(artifact).digest();
    if (!actual.equals(ms.messageDigest.digest)) {
      const err = new Error('bundle messageDigest is not the file\'s SHA-256');
      err.code = 'MESSAGE_DIGEST_ERROR';
      throw err;
    }
  }
  console.log(
    JSON.stringify({
      verified: true,
      mediaType: bundle.mediaType,
      content: bundle.content.$case,
      keyHint: hint,
    }),
  );
} catch (e) {
  console.error(`verify-bundle: ${e.code ?? e.name}: ${e.message}`);
  process.exit(1);
}
