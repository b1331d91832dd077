#!/usr/bin/env python3
# Usage: python3 make-unsigned-crls.py compiler/tests/ui/crl
# Writes hand-made, unsigned CRLs for golden tests (certgate reads them without crlIssuers).
import sys
def tlv(tag, body):
    n = len(body)
    if n < 0x80: l = bytes([n])
    elif n < 0x100: l = bytes([0x81, n])
    else: l = bytes([0x82, n >> 8, n & 0xff])
    return bytes([tag]) + l + body
def seq(*xs): return tlv(0x30, b''.join(xs))
def oid(dotted):
    a = [int(x) for x in dotted.split('.')]
    out = bytes([40*a[0]+a[1]])
    for v in a[2:]:
        enc = [v & 0x7f]; v >>= 7
        while v: enc.append(0x80 | (v & 0x7f)); v >>= 7
        out += bytes(reversed(enc))
    return tlv(0x06, out)
def integer(v):
    b = v.to_bytes((v.bit_length()+8)//8, 'big')
    return tlv(0x02, b)
def name(cn): return seq(tlv(0x31, seq(oid('2.5.4.3'), tlv(0x0c, cn.encode()))))
def utc(s): return tlv(0x17, s.encode())
def ext(o, value, critical=False):
    return seq(oid(o), *( [tlv(0x01, b'\xff')] if critical else []), tlv(0x04, value))
def crl(issuer, entries, exts):
    alg = seq(oid('1.2.840.10045.4.3.2'))
    tbs = [integer(1), alg, name(issuer), utc('260101000000Z'), utc('490101000000Z')]
    if entries:
        tbs.append(seq(*[seq(integer(s), utc('260101000000Z'), *( [seq(*e)] if e else [])) for s, e in entries]))
    if exts: tbs.append(tlv(0xa0, seq(*exts)))
    return seq(seq(*tbs), alg, tlv(0x03, b'\x00' + seq(integer(1), integer(1))))
number = ext('2.5.29.20', integer(7))
idp_indirect = ext('2.5.29.28', seq(tlv(0x84, b'\xff')), critical=True)  # [4] indirectCRL TRUE
def cert_issuer(cn): return ext('2.5.29.29', seq(tlv(0xa4, name(cn))), critical=True)
out = sys.argv[1]
files = {
  'critical-extension.crl.der': crl('Example CA', [(0x10, [])], [number, ext('1.2.3.4', b'\x05\x00', critical=True)]),
  'critical-entry-extension.crl.der': crl('Example CA', [(0x10, [ext('1.2.3.5', b'\x05\x00', critical=True)])], [number]),
  'delta.crl.der': crl('Example CA', [(0x10, [])], [number, ext('2.5.29.27', integer(6), critical=True)]),
  'unmarked-indirect.crl.der': crl('Example CA', [(0x10, []), (0x11, [cert_issuer('Other CA')])], [number]),
  'indirect.crl.der': crl('Example CA', [(0x10, []), (0x11, [cert_issuer('Other CA')]), (0x12, [])], [number, idp_indirect]),
}
for n, b in files.items():
    open(f'{out}/{n}', 'wb').write(b)
