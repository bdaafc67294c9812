/*
 * Chat message encryption, compatible with the crypto-js passphrase format and with
 *   openssl enc -aes-256-cbc -md md5 -a -A -pass pass:<password>
 *
 * Wire text = base64("Salted__" + salt(8 bytes) + AES-256-CBC(PKCS#7(utf8(plaintext))))
 * with key (32 bytes) and IV (16 bytes) derived by OpenSSL's EVP_BytesToKey using MD5,
 * one iteration:  D1 = MD5(pass + salt), D2 = MD5(D1 + pass + salt), D3 = MD5(D2 + pass + salt),
 * key = D1 + D2, iv = D3. The password is UTF-8 encoded.
 *
 * Everything (MD5, AES, base64, UTF-8) is implemented here in plain JavaScript because
 * WebCrypto is not available on non-secure (plain http, non-localhost) origins.
 * Only the salt comes from crypto.getRandomValues.
 *
 * Loading: as a classic <script> it defines window.ChatCrypto; evaluated in Node (for example
 * with the vm module) it defines globalThis.ChatCrypto. No module system is required.
 *
 * API:
 *   ChatCrypto.encrypt(plaintext, password[, salt8])  -> base64 string starting "U2FsdGVkX1"
 *   ChatCrypto.decrypt(wireText, password)           -> plaintext string, or null when the text
 *                                                       cannot be decrypted (never throws)
 *   ChatCrypto.UNREADABLE                            -> "unreadable message"
 *   ChatCrypto.internals                             -> md5, AES block functions, codecs (tests)
 */
(function (root) {
  'use strict';

  // ---------------------------------------------------------------- UTF-8

  function utf8Encode(str) {
    str = String(str);
    var out = [];
    for (var i = 0; i < str.length; i++) {
      var c = str.charCodeAt(i);
      if (c >= 0xd800 && c <= 0xdbff) {
        var d = i + 1 < str.length ? str.charCodeAt(i + 1) : 0;
        if (d >= 0xdc00 && d <= 0xdfff) {
          c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
          i++;
        } else {
          c = 0xfffd; // lone high surrogate
        }
      } else if (c >= 0xdc00 && c <= 0xdfff) {
        c = 0xfffd; // lone low surrogate
      }
      if (c < 0x80) {
        out.push(c);
      } else if (c < 0x800) {
        out.push(0xc0 | (c >> 6), 0x80 | (c & 0x3f));
      } else if (c < 0x10000) {
        out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 0x3f), 0x80 | (c & 0x3f));
      } else {
        out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 0x3f), 0x80 | ((c >> 6) & 0x3f), 0x80 | (c & 0x3f));
      }
    }
    return new Uint8Array(out);
  }

  // Strict decoder: returns null for any malformed sequence (overlong forms, surrogates,
  // code points above U+10FFFF, stray or missing continuation bytes).
  function utf8Decode(bytes) {
    var units = [];
    var parts = [];
    var i = 0;
    var n = bytes.length;
    while (i < n) {
      var b0 = bytes[i];
      var cp;
      var extra;
      var min;
      if (b0 < 0x80) {
        cp = b0; extra = 0; min = 0;
      } else if (b0 >= 0xc2 && b0 <= 0xdf) {
        cp = b0 & 0x1f; extra = 1; min = 0x80;
      } else if (b0 >= 0xe0 && b0 <= 0xef) {
        cp = b0 & 0x0f; extra = 2; min = 0x800;
      } else if (b0 >= 0xf0 && b0 <= 0xf4) {
        cp = b0 & 0x07; extra = 3; min = 0x10000;
      } else {
        return null;
      }
      if (i + extra >= n && extra > 0) return null;
      for (var k = 1; k <= extra; k++) {
        var b = bytes[i + k];
        if ((b & 0xc0) !== 0x80) return null;
        cp = (cp << 6) | (b & 0x3f);
      }
      if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return null;
      i += extra + 1;
      if (cp >= 0x10000) {
        cp -= 0x10000;
        units.push(0xd800 + (cp >> 10), 0xdc00 + (cp & 0x3ff));
      } else {
        units.push(cp);
      }
      if (units.length >= 8192) {
        parts.push(String.fromCharCode.apply(null, units));
        units = [];
      }
    }
    parts.push(String.fromCharCode.apply(null, units));
    return parts.join('');
  }

  // ---------------------------------------------------------------- base64

  var B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  var B64_INDEX = {};
  for (var bi = 0; bi < B64.length; bi++) B64_INDEX[B64.charAt(bi)] = bi;

  function base64Encode(bytes) {
    var out = [];
    var i = 0;
    for (; i + 2 < bytes.length; i += 3) {
      var v = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
      out.push(B64.charAt(v >> 18), B64.charAt((v >> 12) & 63), B64.charAt((v >> 6) & 63), B64.charAt(v & 63));
    }
    var rest = bytes.length - i;
    if (rest === 1) {
      var v1 = bytes[i] << 16;
      out.push(B64.charAt(v1 >> 18), B64.charAt((v1 >> 12) & 63), '==');
    } else if (rest === 2) {
      var v2 = (bytes[i] << 16) | (bytes[i + 1] << 8);
      out.push(B64.charAt(v2 >> 18), B64.charAt((v2 >> 12) & 63), B64.charAt((v2 >> 6) & 63), '=');
    }
    return out.join('');
  }

  // Strict decoder (white space is ignored, as openssl writes line breaks without -A).
  // Returns null for anything that is not canonical padded base64.
  function base64Decode(text) {
    if (typeof text !== 'string') return null;
    var s = text.replace(/[\t\n\r ]+/g, '');
    if (s.length % 4 !== 0) return null;
    var pad = 0;
    if (s.length > 0 && s.charAt(s.length - 1) === '=') pad++;
    if (s.length > 1 && s.charAt(s.length - 2) === '=') pad++;
    var out = new Uint8Array((s.length / 4) * 3 - pad);
    var o = 0;
    for (var i = 0; i < s.length; i += 4) {
      var last = i + 4 === s.length;
      var vals = [0, 0, 0, 0];
      for (var k = 0; k < 4; k++) {
        var ch = s.charAt(i + k);
        if (ch === '=') {
          if (!last || k < 4 - pad) return null;
          vals[k] = 0;
        } else {
          var idx = B64_INDEX[ch];
          if (idx === undefined) return null;
          vals[k] = idx;
        }
      }
      var v = (vals[0] << 18) | (vals[1] << 12) | (vals[2] << 6) | vals[3];
      out[o++] = (v >> 16) & 255;
      if (o < out.length) out[o++] = (v >> 8) & 255;
      if (o < out.length) out[o++] = v & 255;
    }
    return out;
  }

  // ---------------------------------------------------------------- MD5 (RFC 1321)

  var MD5_S = [
    7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22,
    5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20,
    4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
    6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21
  ];
  var MD5_K = new Int32Array(64);
  for (var mi = 0; mi < 64; mi++) MD5_K[mi] = (Math.abs(Math.sin(mi + 1)) * 4294967296) | 0;

  function md5(bytes) {
    var len = bytes.length;
    var total = (((len + 8) >>> 6) + 1) * 64;
    var buf = new Uint8Array(total);
    buf.set(bytes);
    buf[len] = 0x80;
    var bitsLo = (len * 8) >>> 0;
    var bitsHi = Math.floor(len / 0x20000000) >>> 0;
    for (var p = 0; p < 4; p++) {
      buf[total - 8 + p] = (bitsLo >>> (8 * p)) & 255;
      buf[total - 4 + p] = (bitsHi >>> (8 * p)) & 255;
    }
    var a0 = 0x67452301 | 0;
    var b0 = 0xefcdab89 | 0;
    var c0 = 0x98badcfe | 0;
    var d0 = 0x10325476 | 0;
    var m = new Int32Array(16);
    for (var off = 0; off < total; off += 64) {
      for (var w = 0; w < 16; w++) {
        var j = off + w * 4;
        m[w] = buf[j] | (buf[j + 1] << 8) | (buf[j + 2] << 16) | (buf[j + 3] << 24);
      }
      var a = a0;
      var b = b0;
      var c = c0;
      var d = d0;
      for (var i = 0; i < 64; i++) {
        var f;
        var g;
        if (i < 16) {
          f = (b & c) | (~b & d);
          g = i;
        } else if (i < 32) {
          f = (d & b) | (~d & c);
          g = (5 * i + 1) & 15;
        } else if (i < 48) {
          f = b ^ c ^ d;
          g = (3 * i + 5) & 15;
        } else {
          f = c ^ (b | ~d);
          g = (7 * i) & 15;
        }
        var t = d;
        d = c;
        c = b;
        var x = (a + f + MD5_K[i] + m[g]) | 0;
        b = (b + ((x << MD5_S[i]) | (x >>> (32 - MD5_S[i])))) | 0;
        a = t;
      }
      a0 = (a0 + a) | 0;
      b0 = (b0 + b) | 0;
      c0 = (c0 + c) | 0;
      d0 = (d0 + d) | 0;
    }
    var out = new Uint8Array(16);
    var words = [a0, b0, c0, d0];
    for (var q = 0; q < 4; q++) {
      for (var r = 0; r < 4; r++) out[q * 4 + r] = (words[q] >>> (8 * r)) & 255;
    }
    return out;
  }

  // ---------------------------------------------------------------- AES (FIPS-197)

  // GF(2^8) with the AES polynomial x^8 + x^4 + x^3 + x + 1.
  function xtime(v) {
    return ((v << 1) ^ (v & 0x80 ? 0x1b : 0)) & 0xff;
  }
  function gmul(x, y) {
    var r = 0;
    while (y) {
      if (y & 1) r ^= x;
      x = xtime(x);
      y >>= 1;
    }
    return r;
  }

  var SBOX = new Uint8Array(256);
  var INV_SBOX = new Uint8Array(256);
  var MUL2 = new Uint8Array(256);
  var MUL3 = new Uint8Array(256);
  var MUL9 = new Uint8Array(256);
  var MUL11 = new Uint8Array(256);
  var MUL13 = new Uint8Array(256);
  var MUL14 = new Uint8Array(256);
  (function buildTables() {
    // exp/log tables with generator 3
    var exp = new Uint8Array(256);
    var log = new Uint8Array(256);
    var v = 1;
    for (var i = 0; i < 255; i++) {
      exp[i] = v;
      log[v] = i;
      v = v ^ xtime(v); // multiply by 3
    }
    for (var n = 0; n < 256; n++) {
      var inv = n === 0 ? 0 : exp[(255 - log[n]) % 255];
      var s = inv;
      var rot = inv;
      for (var k = 0; k < 4; k++) {
        rot = ((rot << 1) | (rot >> 7)) & 0xff;
        s ^= rot;
      }
      s ^= 0x63;
      SBOX[n] = s;
      INV_SBOX[s] = n;
      MUL2[n] = gmul(n, 2);
      MUL3[n] = gmul(n, 3);
      MUL9[n] = gmul(n, 9);
      MUL11[n] = gmul(n, 11);
      MUL13[n] = gmul(n, 13);
      MUL14[n] = gmul(n, 14);
    }
  })();

  // Expands a 32-byte key into 15 round keys (240 bytes).
  function expandKey256(key) {
    if (key.length !== 32) throw new Error('AES-256 needs a 32-byte key');
    var w = new Uint8Array(240);
    w.set(key);
    var rcon = 1;
    var t = new Uint8Array(4);
    for (var i = 8; i < 60; i++) {
      for (var k = 0; k < 4; k++) t[k] = w[(i - 1) * 4 + k];
      if (i % 8 === 0) {
        var first = t[0];
        t[0] = SBOX[t[1]] ^ rcon;
        t[1] = SBOX[t[2]];
        t[2] = SBOX[t[3]];
        t[3] = SBOX[first];
        rcon = xtime(rcon);
      } else if (i % 8 === 4) {
        for (var s = 0; s < 4; s++) t[s] = SBOX[t[s]];
      }
      for (var m = 0; m < 4; m++) w[i * 4 + m] = w[(i - 8) * 4 + m] ^ t[m];
    }
    return w;
  }

  var ROUNDS = 14;

  // State layout: st[row + 4 * column], the same order as the input bytes.
  function encryptBlock(rk, input, inOff, out, outOff) {
    var st = new Uint8Array(16);
    var tmp = new Uint8Array(16);
    var i;
    for (i = 0; i < 16; i++) st[i] = input[inOff + i] ^ rk[i];
    for (var round = 1; round <= ROUNDS; round++) {
      // SubBytes + ShiftRows
      for (var c = 0; c < 4; c++) {
        for (var r = 0; r < 4; r++) tmp[r + 4 * c] = SBOX[st[r + 4 * ((c + r) & 3)]];
      }
      if (round !== ROUNDS) {
        // MixColumns
        for (var mc = 0; mc < 4; mc++) {
          var a0 = tmp[4 * mc];
          var a1 = tmp[4 * mc + 1];
          var a2 = tmp[4 * mc + 2];
          var a3 = tmp[4 * mc + 3];
          st[4 * mc] = MUL2[a0] ^ MUL3[a1] ^ a2 ^ a3;
          st[4 * mc + 1] = a0 ^ MUL2[a1] ^ MUL3[a2] ^ a3;
          st[4 * mc + 2] = a0 ^ a1 ^ MUL2[a2] ^ MUL3[a3];
          st[4 * mc + 3] = MUL3[a0] ^ a1 ^ a2 ^ MUL2[a3];
        }
      } else {
        st.set(tmp);
      }
      var ko = round * 16;
      for (i = 0; i < 16; i++) st[i] ^= rk[ko + i];
    }
    for (i = 0; i < 16; i++) out[outOff + i] = st[i];
  }

  function decryptBlock(rk, input, inOff, out, outOff) {
    var st = new Uint8Array(16);
    var tmp = new Uint8Array(16);
    var i;
    var ko = ROUNDS * 16;
    for (i = 0; i < 16; i++) st[i] = input[inOff + i] ^ rk[ko + i];
    for (var round = ROUNDS - 1; round >= 0; round--) {
      // InvShiftRows + InvSubBytes
      for (var c = 0; c < 4; c++) {
        for (var r = 0; r < 4; r++) tmp[r + 4 * ((c + r) & 3)] = INV_SBOX[st[r + 4 * c]];
      }
      ko = round * 16;
      for (i = 0; i < 16; i++) tmp[i] ^= rk[ko + i];
      if (round !== 0) {
        // InvMixColumns
        for (var mc = 0; mc < 4; mc++) {
          var a0 = tmp[4 * mc];
          var a1 = tmp[4 * mc + 1];
          var a2 = tmp[4 * mc + 2];
          var a3 = tmp[4 * mc + 3];
          st[4 * mc] = MUL14[a0] ^ MUL11[a1] ^ MUL13[a2] ^ MUL9[a3];
          st[4 * mc + 1] = MUL9[a0] ^ MUL14[a1] ^ MUL11[a2] ^ MUL13[a3];
          st[4 * mc + 2] = MUL13[a0] ^ MUL9[a1] ^ MUL14[a2] ^ MUL11[a3];
          st[4 * mc + 3] = MUL11[a0] ^ MUL13[a1] ^ MUL9[a2] ^ MUL14[a3];
        }
      } else {
        st.set(tmp);
      }
    }
    for (i = 0; i < 16; i++) out[outOff + i] = st[i];
  }

  function cbcEncrypt(key, iv, plain) {
    var rk = expandKey256(key);
    var padLen = 16 - (plain.length % 16);
    var data = new Uint8Array(plain.length + padLen);
    data.set(plain);
    for (var p = plain.length; p < data.length; p++) data[p] = padLen;
    var out = new Uint8Array(data.length);
    var block = new Uint8Array(16);
    var prev = iv;
    var prevOff = 0;
    for (var off = 0; off < data.length; off += 16) {
      for (var i = 0; i < 16; i++) block[i] = data[off + i] ^ prev[prevOff + i];
      encryptBlock(rk, block, 0, out, off);
      prev = out;
      prevOff = off;
    }
    return out;
  }

  // Returns the unpadded plaintext bytes, or null when the length or padding is wrong.
  function cbcDecrypt(key, iv, cipher) {
    if (cipher.length === 0 || cipher.length % 16 !== 0) return null;
    var rk = expandKey256(key);
    var out = new Uint8Array(cipher.length);
    for (var off = 0; off < cipher.length; off += 16) {
      decryptBlock(rk, cipher, off, out, off);
      for (var i = 0; i < 16; i++) out[off + i] ^= off === 0 ? iv[i] : cipher[off - 16 + i];
    }
    var padLen = out[out.length - 1];
    if (padLen < 1 || padLen > 16) return null;
    for (var p = out.length - padLen; p < out.length; p++) {
      if (out[p] !== padLen) return null;
    }
    return out.subarray(0, out.length - padLen);
  }

  // ---------------------------------------------------------------- OpenSSL passphrase format

  var SALTED = [0x53, 0x61, 0x6c, 0x74, 0x65, 0x64, 0x5f, 0x5f]; // "Salted__"

  function concatBytes(list) {
    var len = 0;
    for (var i = 0; i < list.length; i++) len += list[i].length;
    var out = new Uint8Array(len);
    var off = 0;
    for (var j = 0; j < list.length; j++) {
      out.set(list[j], off);
      off += list[j].length;
    }
    return out;
  }

  // EVP_BytesToKey(MD5, count = 1) producing a 32-byte key and a 16-byte IV.
  function evpBytesToKey(passBytes, salt) {
    var derived = new Uint8Array(0);
    var prev = new Uint8Array(0);
    while (derived.length < 48) {
      prev = md5(concatBytes([prev, passBytes, salt]));
      derived = concatBytes([derived, prev]);
    }
    return { key: derived.slice(0, 32), iv: derived.slice(32, 48) };
  }

  function randomSalt() {
    var c = root.crypto || (typeof crypto !== 'undefined' ? crypto : null);
    if (!c || typeof c.getRandomValues !== 'function') {
      throw new Error('crypto.getRandomValues is not available');
    }
    return c.getRandomValues(new Uint8Array(8));
  }

  function encrypt(plaintext, password, salt) {
    if (salt === undefined || salt === null) salt = randomSalt();
    salt = Uint8Array.from(salt);
    if (salt.length !== 8) throw new Error('salt must be 8 bytes');
    var kv = evpBytesToKey(utf8Encode(password), salt);
    var cipher = cbcEncrypt(kv.key, kv.iv, utf8Encode(plaintext));
    return base64Encode(concatBytes([Uint8Array.from(SALTED), salt, cipher]));
  }

  function decrypt(wireText, password) {
    try {
      var raw = base64Decode(wireText);
      if (raw === null || raw.length < 32 || (raw.length - 16) % 16 !== 0) return null;
      for (var i = 0; i < 8; i++) {
        if (raw[i] !== SALTED[i]) return null;
      }
      var salt = raw.subarray(8, 16);
      var kv = evpBytesToKey(utf8Encode(password), salt);
      var plain = cbcDecrypt(kv.key, kv.iv, raw.subarray(16));
      if (plain === null) return null;
      return utf8Decode(plain);
    } catch (e) {
      return null;
    }
  }

  function toHex(bytes) {
    var s = '';
    for (var i = 0; i < bytes.length; i++) s += (bytes[i] < 16 ? '0' : '') + bytes[i].toString(16);
    return s;
  }

  root.ChatCrypto = {
    encrypt: encrypt,
    decrypt: decrypt,
    UNREADABLE: 'unreadable message',
    internals: {
      md5: md5,
      toHex: toHex,
      utf8Encode: utf8Encode,
      utf8Decode: utf8Decode,
      base64Encode: base64Encode,
      base64Decode: base64Decode,
      expandKey256: expandKey256,
      encryptBlock: encryptBlock,
      decryptBlock: decryptBlock,
      evpBytesToKey: evpBytesToKey
    }
  };
})(typeof window !== 'undefined' ? window : globalThis);
