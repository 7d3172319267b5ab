/* connection: negotiate the protocol */
extern int vmbus_proto_version;

int vmbus_connect(int version)
{
	int ret;

	vmbus_proto_version = version;
	return 0;
}
