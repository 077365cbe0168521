using Corral.Common;
using Corral.Oci;
using Shouldly;
using Xunit;

namespace Corral.Tests.Oci;

public sealed class GpuDevicesTests
{
    private const string ProcDevices = "Character devices:\n  1 mem\n195 nvidia-frontend\n195 nvidia\n 508 nvidia-uvm\n\nBlock devices:\n  8 sd\n";

    [Fact]
    public void MapsTheDriversNodesToMajorsAndMinors()
    {
        var devices = GpuDevices.Discover(ProcDevices, ["/dev/nvidia0", "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia1", "/dev/nvidia-modeset"]);

        devices.Select(d => (d.Path, d.Major, d.Minor)).ShouldBe(
        [
            ("/dev/nvidia-uvm", 508L, 0L),
            ("/dev/nvidia-uvm-tools", 508L, 1L),
            ("/dev/nvidia0", 195L, 0L),
            ("/dev/nvidia1", 195L, 1L),
            ("/dev/nvidiactl", 195L, 255L),
        ]);
        devices.ShouldAllBe(d => d.Type == "c");
    }

    [Fact]
    public void NoGpuIsAClearError()
    {
        var error = Should.Throw<CorralException>(() => GpuDevices.Discover("Character devices:\n  1 mem\n", []));

        error.Message.ShouldStartWith("--gpu: no NVIDIA GPU on this host");
    }
}
