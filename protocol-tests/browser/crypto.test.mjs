// Unit test of src/chat/web/crypto.js against the openssl command line tool:
//   openssl enc [-d] -aes-256-cbc -md md5 -a -A -pass pass:<password>
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import vm from 'node:vm';

const CRYPTO_JS = fileURLToPath(new URL('../../src/chat/web/crypto.js', import.meta.url));
const source = readFileSync(CRYPTO_JS, 'utf8');

// Evaluates crypto.js the way a page would, with a global object of its own.
function load(globals = { crypto: globalThis.crypto }) {
  const context = vm.createContext({ ...globals });
  vm.runInContext(source, context, { filename: CRYPTO_JS });
  return context;
}

const { ChatCrypto } = load();
const I = ChatCrypto.internals;
const utf8 = (s) => Buffer.from(s, 'utf8');

function openssl(args, input) {
  const r = spawnSync('openssl', args, { input });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr.toString() };
}
function opensslDecrypt(wire, password) {
  return openssl(['enc', '-d', '-aes-256-cbc', '-md', 'md5', '-a', '-A', '-pass', `pass:${password}`], wire);
}
function opensslEncrypt(plain, password, saltHex) {
  const args = ['enc', '-aes-256-cbc', '-md', 'md5', '-a', '-A', '-pass', `pass:${password}`];
  if (saltHex) args.push('-S', saltHex);
  else args.push('-salt');
  const r = openssl(args, plain);
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.toString('utf8').trim();
}

// Builds a string of exactly `bytes` UTF-8 bytes, mixing 1- to 4-byte characters so that
// multi-byte sequences straddle the 16-byte block boundaries.
function textOfBytes(bytes, seed = 0) {
  const chars = ['a', 'é', '€', '🎉', 'Z', 'ß', '中', ' ', '😀', '!'];
  let s = '';
  let n = 0;
  let i = seed;
  while (n < bytes) {
    const c = chars[i++ % chars.length];
    const len = utf8(c).length;
    if (n + len > bytes) {
      s += 'x'.repeat(bytes - n);
      n = bytes;
    } else {
      s += c;
      n += len;
    }
  }
  assert.equal(utf8(s).length, bytes);
  return s;
}

const LENGTHS = [0, 1, 2, 14, 15, 16, 17, 18, 31, 32, 33, 47, 48, 49, 63, 64, 65, 255, 256, 1000, 4096];
const PASSWORDS = ['secret1', 'correct horse battery staple', 'pässwörd€🎉', 'a"b\'c$d`e\\f;g'];

test('MD5 matches the RFC 1321 test suite', () => {
  const vectors = {
    '': 'd41d8cd98f00b204e9800998ecf8427e',
    a: '0cc175b9c0f1b6a831c399e269772661',
    abc: '900150983cd24fb0d6963f7d28e17f72',
    'message digest': 'f96b697d7cb7938d525a2f31aaf161d0',
    abcdefghijklmnopqrstuvwxyz: 'c3fcd3d76192e4007dfb496cca67e13b',
    ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789: 'd174ab98d277d9f5a5611c2c9f419d9f',
    '12345678901234567890123456789012345678901234567890123456789012345678901234567890':
      '57edf4a22be3c955ac49da2e2107b67a',
  };
  for (const [input, hex] of Object.entries(vectors)) {
    assert.equal(I.toHex(I.md5(I.utf8Encode(input))), hex, `md5(${JSON.stringify(input)})`);
  }
});

test('MD5 agrees with openssl dgst at block-padding edges', () => {
  for (const len of [55, 56, 57, 63, 64, 65, 119, 120, 128, 1000]) {
    const data = Buffer.alloc(len, 0).map((_, i) => (i * 7 + len) & 255);
    const r = openssl(['dgst', '-md5', '-r'], data);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(I.toHex(I.md5(new Uint8Array(data))), r.stdout.toString().split(' ')[0], `length ${len}`);
  }
});

test('AES-256 block cipher matches the FIPS-197 example', () => {
  const key = Uint8Array.from({ length: 32 }, (_, i) => i);
  const plain = Uint8Array.from(Buffer.from('00112233445566778899aabbccddeeff', 'hex'));
  const rk = I.expandKey256(key);
  const out = new Uint8Array(16);
  I.encryptBlock(rk, plain, 0, out, 0);
  assert.equal(I.toHex(out), '8ea2b7ca516745bfeafc49904b496089');
  const back = new Uint8Array(16);
  I.decryptBlock(rk, out, 0, back, 0);
  assert.equal(I.toHex(back), '00112233445566778899aabbccddeeff');
});

test('with a fixed salt the output is byte for byte what openssl writes', () => {
  const salt = Buffer.from('0102030405060708', 'hex');
  for (const password of PASSWORDS) {
    for (const len of [0, 15, 16, 17, 33]) {
      const text = textOfBytes(len, len);
      const ours = Buffer.from(ChatCrypto.encrypt(text, password, new Uint8Array(salt)), 'base64');
      // openssl 3 leaves out the "Salted__" header when the salt is given with -S
      let theirs = Buffer.from(opensslEncrypt(utf8(text), password, salt.toString('hex')), 'base64');
      if (!theirs.subarray(0, 8).equals(Buffer.from('Salted__'))) {
        theirs = Buffer.concat([Buffer.from('Salted__'), salt, theirs]);
      }
      assert.equal(ours.toString('hex'), theirs.toString('hex'), `len ${len} pw ${password}`);
    }
  }
});

test('crypto.js encrypts, openssl decrypts (non-ASCII, padding edges)', () => {
  for (const password of PASSWORDS) {
    for (const len of LENGTHS) {
      const text = textOfBytes(len, len + password.length);
      const wire = ChatCrypto.encrypt(text, password);
      assert.match(wire, /^U2FsdGVkX1[A-Za-z0-9+/]+={0,2}$/);
      // "Salted__" + 8 salt bytes + whole blocks of PKCS#7-padded data
      const raw = Buffer.from(wire, 'base64');
      assert.equal(raw.length, 16 + (Math.floor(len / 16) + 1) * 16);
      const r = opensslDecrypt(wire, password);
      assert.equal(r.status, 0, `openssl failed for len ${len}: ${r.stderr}`);
      assert.equal(r.stdout.toString('utf8'), text, `len ${len} pw ${password}`);
    }
  }
});

test('openssl encrypts (random salt), crypto.js decrypts (non-ASCII, padding edges)', () => {
  for (const password of PASSWORDS) {
    for (const len of LENGTHS) {
      const text = textOfBytes(len, len * 3 + 1);
      const wire = opensslEncrypt(utf8(text), password);
      assert.ok(wire.startsWith('U2FsdGVkX1'));
      assert.equal(ChatCrypto.decrypt(wire, password), text, `len ${len} pw ${password}`);
    }
  }
});

test('the salt is random', () => {
  const a = ChatCrypto.encrypt('same text', 'secret1');
  const b = ChatCrypto.encrypt('same text', 'secret1');
  assert.notEqual(a, b);
  assert.equal(ChatCrypto.decrypt(a, 'secret1'), 'same text');
  assert.equal(ChatCrypto.decrypt(b, 'secret1'), 'same text');
});

test('undecryptable input gives null and never throws', () => {
  const good = ChatCrypto.encrypt('hello there, this is a test message', 'secret1');
  const raw = Buffer.from(good, 'base64');
  const flipped = Buffer.from(raw);
  flipped[flipped.length - 1] ^= 0x01; // breaks the padding of the last block
  const cases = {
    'wrong password': [good, 'secret2'],
    'wrong password (from openssl)': [opensslEncrypt(utf8('grüß dich'), 'otherpass'), 'secret1'],
    'flipped last byte': [flipped.toString('base64'), 'secret1'],
    'truncated to a non-block length': [raw.subarray(0, raw.length - 3).toString('base64'), 'secret1'],
    'truncated to the header': [raw.subarray(0, 16).toString('base64'), 'secret1'],
    'no Salted__ header': [raw.subarray(16).toString('base64'), 'secret1'],
    'bad base64 characters': [good.slice(0, 20) + '*&^' + good.slice(23), 'secret1'],
    'bad base64 length': [good.slice(0, -1), 'secret1'],
    'padding in the middle': ['U2Fs=GVkX1' + good.slice(10), 'secret1'],
    'plain text': ['hello', 'secret1'],
    'empty string': ['', 'secret1'],
    'not a string (number)': [42, 'secret1'],
    'not a string (null)': [null, 'secret1'],
    'not a string (object)': [{ message: good }, 'secret1'],
  };
  for (const [name, [wire, password]] of Object.entries(cases)) {
    let result;
    assert.doesNotThrow(() => { result = ChatCrypto.decrypt(wire, password); }, name);
    assert.equal(result, null, name);
  }
});

test('valid padding but invalid UTF-8 gives null', () => {
  const invalid = [
    Buffer.from([0xff, 0xfe, 0x41]), // bytes that never occur in UTF-8
    Buffer.from([0x41, 0xc3]), // truncated 2-byte sequence
    Buffer.from([0xc0, 0xaf]), // overlong "/"
    Buffer.from([0xed, 0xa0, 0x80]), // UTF-16 surrogate
    Buffer.from([0xf4, 0x90, 0x80, 0x80]), // above U+10FFFF
    Buffer.from([0x80, 0x41]), // stray continuation byte
  ];
  for (const bytes of invalid) {
    const wire = opensslEncrypt(bytes, 'secret1');
    assert.equal(ChatCrypto.decrypt(wire, 'secret1'), null, bytes.toString('hex'));
  }
});

test('text survives UTF-8 round trips, lone surrogates become U+FFFD', () => {
  const text = 'Ωmega — “quotes” 日本語 🎉👩‍👩‍👧 e\u0301 \u0000 end';
  assert.equal(ChatCrypto.decrypt(ChatCrypto.encrypt(text, 'secret1'), 'secret1'), text);
  assert.equal(ChatCrypto.decrypt(ChatCrypto.encrypt('a\ud800b', 'secret1'), 'secret1'), 'a\ufffdb');
  assert.equal(ChatCrypto.UNREADABLE, 'unreadable message');
});

test('loads as a browser script (defines window.ChatCrypto)', () => {
  const context = vm.createContext({});
  context.window = context;
  context.window.crypto = globalThis.crypto;
  vm.runInContext(source, context);
  assert.equal(typeof context.window.ChatCrypto.encrypt, 'function');
  const wire = context.window.ChatCrypto.encrypt('hi', 'secret1');
  assert.equal(ChatCrypto.decrypt(wire, 'secret1'), 'hi');
});

test('without crypto.getRandomValues, encrypt refuses instead of using a weak salt', () => {
  const { ChatCrypto: noRandom } = load({});
  assert.throws(() => noRandom.encrypt('hi', 'secret1'), /getRandomValues/);
});
