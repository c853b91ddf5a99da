using System.Text;
using Cowfish.Devices;
using Cowfish.Format;
using Xunit;

namespace Cowfish.Tests;

public sealed class DeviceTests
{
    [Fact]
    public void Crc32CMatchesTheStandardCheckValueInHardwareAndSoftware()
    {
        var data = Encoding.ASCII.GetBytes("123456789");
        Assert.Equal(0xE3069283u, Crc32C.Compute(data));
        Assert.Equal(0xE3069283u, ~Crc32C.UpdateSoftware(0xFFFFFFFFu, data));
        var rng = new Random(3);
        // Short inputs, and long ones that take the three-lane path (4,080 bytes a round) with tails.
        foreach (int len in Enumerable.Range(0, 43).Select(i => i * 7).Concat([4079, 4080, 4081, 4096, 8160, 8191, 12_345, 65_536]))
        {
            var buf = new byte[len];
            rng.NextBytes(buf);
            Assert.Equal(~Crc32C.UpdateSoftware(0xFFFFFFFFu, buf), Crc32C.Compute(buf));
            // Continuing a running CRC across a split gives the same answer.
            int cut = len / 3;
            Assert.Equal(Crc32C.Compute(buf), ~Crc32C.Update(Crc32C.Update(0xFFFFFFFFu, buf.AsSpan(0, cut)), buf.AsSpan(cut)));
        }
    }

    [Fact]
    public void MemoryDeviceGrowsReadsZerosAndShrinks()
    {
        var d = new MemoryDevice();
        d.Write(3 << 20, [1, 2, 3]);
        Assert.Equal((3 << 20) + 3, d.Length);
        var buf = new byte[8];
        d.Read((3 << 20) - 2, buf);
        Assert.Equal(new byte[] { 0, 0, 1, 2, 3, 0, 0, 0 }, buf);
        d.SetLength((3 << 20) + 1);
        d.SetLength(4 << 20);
        d.Read(3 << 20, buf);
        Assert.Equal(new byte[] { 1, 0, 0, 0, 0, 0, 0, 0 }, buf);
    }

    [Fact]
    public void FileDeviceWritesFlushesAndLocks()
    {
        string path = Path.Combine(Path.GetTempPath(), $"cowfish-dev-{Guid.NewGuid():N}");
        try
        {
            using (var d = FileDevice.Open(path, create: true))
            {
                d.Write(8192, [9, 8, 7]);
                d.Flush();
                Assert.Equal(8195, d.Length);
                Assert.Throws<PoolBusyException>(() => FileDevice.Open(path));
                var buf = new byte[4];
                d.Read(8192, buf);
                Assert.Equal(new byte[] { 9, 8, 7, 0 }, buf);
                d.SetLength(16384);
                Assert.Equal(16384, new FileInfo(path).Length);
            }
            using var again = FileDevice.Open(path);
            Assert.Equal(16384, again.Length);
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void FaultDeviceForgetsUnflushedWritesAtAPowerCut()
    {
        var d = new FaultInjectingDevice();
        d.Write(0, [1, 1, 1, 1]);
        d.Flush();
        d.Write(0, [2, 2]);
        d.CutAtFlush(1);
        Assert.Throws<DeviceIOException>(() => d.Flush());
        Assert.True(d.IsDead);
        Assert.Throws<DeviceIOException>(() => d.Write(0, [3]));
        Assert.Equal(new byte[] { 1, 1, 1, 1 }, d.CrashImage(CrashMode.DropUnflushed));
        Assert.Equal(new byte[] { 2, 2, 1, 1 }, d.LiveImage());
    }

    [Fact]
    public void FaultDeviceTearsTheLastWriteAtASectorBoundary()
    {
        var d = new FaultInjectingDevice(new byte[4096]);
        var data = Enumerable.Repeat((byte)7, 4096).ToArray();
        d.Write(0, data);
        var seen = new HashSet<int>();
        for (int s = 0; s < 50; s++)
        {
            var img = d.CrashImage(CrashMode.TearLastWrite, new Random(s));
            int kept = Array.IndexOf(img, (byte)0);
            if (kept < 0) kept = 4096;
            Assert.Equal(0, kept % FaultInjectingDevice.SectorSize);
            Assert.All(img.Take(kept), b => Assert.Equal(7, b));
            Assert.All(img.Skip(kept), b => Assert.Equal(0, b));
            seen.Add(kept);
        }
        Assert.True(seen.Count > 3, "tears should land at different sectors");
    }

    [Fact]
    public void FaultDeviceFailsOnACountdown()
    {
        var d = new FaultInjectingDevice(new byte[4096]);
        d.FailWriteIn(2);
        d.Write(0, [1]);
        Assert.Throws<DeviceIOException>(() => d.Write(0, [2]));
        d.Write(0, [3]);
        d.FailReadIn(1);
        Assert.Throws<DeviceIOException>(() => d.Read(0, new byte[1]));
        d.FailFlushIn(1);
        Assert.Throws<DeviceIOException>(() => d.Flush());
        d.Flush();
        Assert.Equal(1, d.FlushCount);
    }
}
