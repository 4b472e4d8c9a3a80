"""The AIOS Instance SDK's sample block, served by aios-grpc.

Only the import line differs from the seed's SimpleBlock. Serve it with
``python examples/simple_block.py`` or ``aios-grpc serve examples/simple_block.py:SimpleBlock``.
"""

from aios_grpc import *


class SimpleBlock:
    def __init__(self, context):
        """
        Initializes the block with initial parameters.
        """
        self.context = context
        self.threshold = context.block_init_parameters.get("threshold", 0.5)

    def on_preprocess(self, packet):
        """
        Parses the JSON data from the packet.
        """
        try:
            data = json.loads(packet.data)
            return True, [PreProcessResult(packet=packet, extra_data={"input": data})]
        except Exception as e:
            return False, str(e)

    def on_data(self, preprocessed_entry):
        """
        Processes the input and returns a result based on a simple threshold.
        """
        try:
            input_data = preprocessed_entry.extra_data["input"]
            value = input_data.get("value", 0)

            result = {"value": value, "passed": value > self.threshold}

            return True, OnDataResult(output=result)
        except Exception as e:
            return False, str(e)

    def on_update(self, updated_parameters):
        """
        Updates the threshold value dynamically.
        """
        try:
            if "threshold" in updated_parameters:
                self.threshold = updated_parameters["threshold"]
            return True, updated_parameters
        except Exception as e:
            return False, str(e)

    def health(self):
        """
        Returns basic health status.
        """
        return {"status": "healthy"}

    def management(self, action, data):
        """
        Handles simple management commands.
        """
        if action == "get_threshold":
            return {"threshold": self.threshold}
        elif action == "reset":
            self.threshold = 0.5
            return {"message": "Threshold reset to default"}
        else:
            return {"message": f"Unknown action: {action}"}

    def get_muxer(self):
        """
        No muxing needed for this example.
        """
        return None


if __name__ == "__main__":
    block = Block(SimpleBlock)
    block.run()
