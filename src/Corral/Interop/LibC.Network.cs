using System.Runtime.InteropServices;

namespace Corral.Interop;

/// <summary>Host-port reservations for published ports: plain bound sockets, without .NET's SO_REUSEADDR.</summary>
internal static partial class LibC
{
    public const int AF_INET = 2;
    public const int SOCK_STREAM = 1;
    public const int SOCK_DGRAM = 2;
    public const int SOCK_CLOEXEC = 0x80000;
    public const int EADDRINUSE = 98;

    [StructLayout(LayoutKind.Sequential)]
    public struct SockAddrIn
    {
        public ushort Family;

        /// <summary>Network byte order.</summary>
        public ushort Port;

        /// <summary>Network byte order.</summary>
        public uint Address;

        public ulong Zero;
    }

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int socket(int domain, int type, int protocol);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int bind(int fd, in SockAddrIn address, int length);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int getsockname(int fd, out SockAddrIn address, ref int length);
}
