"""One description of the machine a measurement ran on (rdkit_ae.machine), used by the bench and the benchmarks."""

from __future__ import annotations

import json

from rdkit_ae.machine import isa_summary, machine_info, machine_summary, parse_cpuinfo

X86 = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse4_2 avx avx2 fma f16c avx512f avx512bw avx512vl avx512_vnni avx512_bf16 amx_tile amx_bf16 amx_int8

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse4_2
"""

ARM = """processor\t: 0
BogoMIPS\t: 2000.00
Features\t: fp asimd evtstrm aes sha1 sha2 crc32 atomics fphp asimdhp asimddp sve sve2 bf16 i8mm
CPU implementer\t: 0x41
"""


def test_cpuinfo_gives_the_name_and_the_isa_flags_that_matter():
    name, isa = parse_cpuinfo(X86)
    assert name == "Intel(R) Xeon(R) Platinum 8480+"
    assert isa == [
        "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
        "amx_tile", "amx_bf16", "amx_int8",
    ]  # fmt: skip
    assert isa_summary(isa) == "avx512+vnni+bf16, amx+bf16+int8"
    name, isa = parse_cpuinfo(ARM)
    assert name is None and isa_summary(isa) == "sve2+bf16+i8mm"
    assert isa_summary(["sse4_2", "avx", "avx2"]) == "avx2" and isa_summary([]) == ""


def test_machine_info_is_plain_data_and_summarised_in_one_line():
    info = machine_info()
    assert json.loads(json.dumps(info)) == info
    assert info["cpu"] and info["cores"] >= 1 and 1 <= info["available_cores"] <= info["cores"]
    assert info["torch"] and info["compressai"] and isinstance(info["isa"], list)
    line = machine_summary(info, threads=2)
    assert line.startswith(f"{info['cpu']}, {info['cores']} cores") and line.endswith(", 2 threads")
    assert f"torch {info['torch']}" in line and "\n" not in line
